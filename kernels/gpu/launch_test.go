package gpu

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/forgepipe/forgepipe/hip"
)

// TestKernelsWaitFirst: the body of every FP_KERNEL in src/*.cu begins with
// FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT(); — the promise that makes
// launching each of them as dependent safe (launch.go) — and no kernel is
// declared without FP_KERNEL.
func TestKernelsWaitFirst(t *testing.T) {
	files := SourceFiles()
	compat := stripComments(files["compat.h"])
	for _, def := range []string{
		`#define FP_GRID_WAIT() asm volatile("griddepcontrol.wait;" ::: "memory")`,
		`#define FP_GRID_LAUNCH_DEPENDENTS() asm volatile("griddepcontrol.launch_dependents;")`,
	} {
		if !strings.Contains(compat, def) {
			t.Errorf("compat.h does not define %s", def)
		}
	}
	const first = "FP_GRID_LAUNCH_DEPENDENTS();FP_GRID_WAIT();"
	// or, for a kernel whose first reads are of its weights, the wait that
	// prefetches them (compat.h)
	const firstPrefetch = "FP_GRID_LAUNCH_DEPENDENTS();FP_GRID_WAIT_PREFETCH("
	bounds := regexp.MustCompile(`__launch_bounds__\s*\([^)]*\)`)
	ident := regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_#]*)\s*\($`)
	kernels := 0
	for _, name := range sourceFiles {
		src := stripComments(files[name])
		if strings.Contains(src, "__global__") {
			t.Errorf("%s declares a kernel with __global__: use FP_KERNEL, whose body begins with %s", name, first)
		}
		for off := 0; ; {
			i := strings.Index(src[off:], "FP_KERNEL")
			if i < 0 {
				break
			}
			at := off + i
			off = at + len("FP_KERNEL")
			open := strings.IndexByte(src[off:], '{')
			if open < 0 {
				t.Errorf("%s:%d: FP_KERNEL without a body", name, line(src, at))
				break
			}
			head := bounds.ReplaceAllString(src[off:off+open], "")
			kernel := "?"
			if p := strings.IndexByte(head, '('); p >= 0 {
				if m := ident.FindStringSubmatch(head[:p+1]); m != nil {
					kernel = m[1]
				}
			}
			kernels++
			body := squeeze(src[off+open+1 : min(len(src), off+open+1+400)])
			if !strings.HasPrefix(body, first) && !strings.HasPrefix(body, firstPrefetch) {
				t.Errorf("%s:%d: kernel %s does not begin with FP_GRID_LAUNCH_DEPENDENTS(); FP_GRID_WAIT(); "+
					"(it is launched as dependent and must wait for the work before it first)", name, line(src, at), kernel)
			}
		}
	}
	if kernels < 20 {
		t.Fatalf("found %d FP_KERNEL definitions: the parse is broken", kernels)
	}
}

// stripComments blanks out the // and /* */ comments of C source, keeping
// newlines and string literals, so offsets and line numbers stay.
func stripComments(src string) string {
	b := []byte(src)
	for i := 0; i < len(b); i++ {
		switch {
		case b[i] == '"':
			for i++; i < len(b) && b[i] != '"' && b[i] != '\n'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
		case b[i] == '/' && i+1 < len(b) && b[i+1] == '/':
			for ; i < len(b) && b[i] != '\n'; i++ {
				b[i] = ' '
			}
		case b[i] == '/' && i+1 < len(b) && b[i+1] == '*':
			for ; i < len(b) && !(b[i] == '*' && i+1 < len(b) && b[i+1] == '/'); i++ {
				if b[i] != '\n' {
					b[i] = ' '
				}
			}
			if i+1 < len(b) {
				b[i], b[i+1] = ' ', ' '
				i++
			}
		}
	}
	return string(b)
}

// squeeze drops white space and the backslashes that continue macro lines.
func squeeze(s string) string {
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\\' {
			return -1
		}
		return r
	}, s)
}

func line(src string, off int) int { return 1 + strings.Count(src[:off], "\n") }

// TestLaunchesGoThroughHelper: the package's Go code launches kernels only
// through (*Kernels).launch, which makes them dependent.
func TestLaunchesGoThroughHelper(t *testing.T) {
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") || name == "launch.go" {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			if sel, ok := call.Fun.(*ast.SelectorExpr); ok && (sel.Sel.Name == "Launch" || sel.Sel.Name == "LaunchEx") {
				t.Errorf("%s: a kernel launched with %s, not k.launch", fset.Position(call.Pos()), sel.Sel.Name)
			}
			return true
		})
	}
}

// recordingStream notes the launches made on it.
type recordingStream struct {
	hip.Stream
	t         *testing.T
	dependent []bool
}

func (r *recordingStream) Launch(f hip.Function, grid, block hip.Dim3, sharedMem uint32, args ...hip.Arg) error {
	r.t.Errorf("kernel %s launched with Launch, not LaunchEx", f.Name())
	return r.Stream.Launch(f, grid, block, sharedMem, args...)
}

func (r *recordingStream) LaunchEx(f hip.Function, c hip.LaunchConfig, args ...hip.Arg) error {
	r.dependent = append(r.dependent, c.Dependent)
	return r.Stream.LaunchEx(f, c, args...)
}

// TestLaunchesDependent: launches are dependent by default, ordinary with
// FORGEPIPE_PDL=0.
func TestLaunchesDependent(t *testing.T) {
	for _, tc := range []struct {
		env  string
		want bool
	}{{"", true}, {"1", true}, {"0", false}} {
		t.Run("FORGEPIPE_PDL="+tc.env, func(t *testing.T) {
			t.Setenv("FORGEPIPE_PDL", tc.env)
			e := emulatedEnv(t, 1)
			const n = 64
			x, y := e.alloc(4*n), e.alloc(4*n)
			rs := &recordingStream{Stream: e.s, t: t}
			e.check(e.k.Add(rs, y, x, x, n))
			e.check(e.k.RMSNorm(rs, y, x, x, 1, n, 1e-5))
			e.check(e.s.Synchronize(t.Context()))
			if len(rs.dependent) != 2 || rs.dependent[0] != tc.want || rs.dependent[1] != tc.want {
				t.Fatalf("launches dependent %v, want 2 × %v", rs.dependent, tc.want)
			}
		})
	}
}
