package gpu

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestHipccCompilesModule compiles the module source as hiprtc sees it (one
// translation unit, Source()) for CDNA (gfx90a, wave 64) and RDNA (gfx1030,
// wave 32) with hipcc, warnings as errors. It skips where hipcc is not
// installed; CI installs Debian's (see .ci/run), and `make amd-check`
// compiles each source file the same way.
func TestHipccCompilesModule(t *testing.T) {
	hipcc, err := exec.LookPath("hipcc")
	if err != nil {
		if os.Getenv("FORGEPIPE_REQUIRE_HIPCC") != "" {
			t.Fatal("hipcc not installed, and FORGEPIPE_REQUIRE_HIPCC is set (make amd-check)")
		}
		t.Skip("hipcc not installed (apt-get install hipcc): AMD compile check skipped")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "module.cu")
	if err := os.WriteFile(src, []byte(Source()), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, arch := range []string{"gfx90a", "gfx1030"} {
		t.Run(arch, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(hipcc, "--offload-arch="+arch, "--cuda-device-only", "-c",
				"-Wall", "-Wextra", "-Werror", "-o", filepath.Join(dir, arch+".o"), src)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%v: %v\n%s", cmd, err, out)
			}
		})
	}
}
