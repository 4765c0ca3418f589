package tests

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/forgepipe/forgepipe/internal/testutil"
	"github.com/forgepipe/forgepipe/model"
	"github.com/forgepipe/forgepipe/sample"
)

// refRun is one prompt of a reference file written by
// scripts/reference/forward.py (an independent PyTorch forward pass with its
// own GGUF parser; see testdata/reference/README.md). Entry i of Top5/Logits
// is the next-token distribution after seq[0..i], seq = prompt + generated.
type refRun struct {
	PromptIDs    []int32        `json:"prompt_ids"`
	GeneratedIDs []int32        `json:"generated_ids"`
	Top5         [][][2]float64 `json:"top5"`
	Logits       []string       `json:"logits"` // base64 little-endian float32
}

type refFile struct {
	Model  string   `json:"model"`
	SHA256 string   `json:"sha256"`
	DType  string   `json:"dtype"`
	Runs   []refRun `json:"runs"`
	refRun          // single-prompt files keep the run at the top level
}

func loadReference(t *testing.T, name string) refFile {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "testdata", "reference", name))
	if err != nil {
		t.Fatal(err)
	}
	var f refFile
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(f.Runs) == 0 {
		f.Runs = []refRun{f.refRun}
	}
	return f
}

func decodeLogits(t *testing.T, s string) []float32 {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(raw)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out
}

// compareWithReference runs every reference sequence through our host
// forward pass in one batch and checks: the greedy choice at every
// generated position equals the reference's, full logits (where stored) are
// within relTol of the reference relative to the largest |logit| at that
// position, and the top-5 logits are within the same bound. It returns the
// largest relative error seen.
func compareWithReference(t *testing.T, m *model.Model, ref refFile, relTol float64) float64 {
	t.Helper()
	worst := 0.0
	v := m.Config.Vocab
	for ri, run := range ref.Runs {
		seq := append(append([]int32(nil), run.PromptIDs...), run.GeneratedIDs...)
		logits, err := m.Forward(m.NewState(), seq[:len(seq)-1], true)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(seq)-1; i++ {
			row := logits[i*v : (i+1)*v]
			scale := 0.0
			for _, x := range row {
				scale = math.Max(scale, math.Abs(float64(x)))
			}
			var full []float32
			if i < len(run.Logits) {
				full = decodeLogits(t, run.Logits[i])
			}
			// The greedy choice must agree wherever the reference's margin
			// between its top two logits is larger than our error bound.
			if i >= len(run.PromptIDs)-1 && (full == nil || margin(full) > 2*relTol*scale) {
				if got, want := sample.Greedy(row), seq[i+1]; got != want {
					t.Errorf("run %d position %d: greedy token %d, reference %d", ri, i, got, want)
				}
			}
			check := func(id int, want float64) {
				rel := math.Abs(float64(row[id])-want) / scale
				worst = math.Max(worst, rel)
				if rel > relTol {
					t.Errorf("run %d position %d logit %d: %.6f, reference %.6f (relative error %.2g > %.2g)", ri, i, id, row[id], want, rel, relTol)
				}
			}
			if full != nil {
				for id, want := range full {
					check(id, float64(want))
				}
			} else if i < len(run.Top5) {
				for _, e := range run.Top5[i] {
					check(int(e[0]), e[1])
				}
			}
		}
	}
	return worst
}

// TestBundledModelAgainstPyTorch: our float32 host forward pass against the
// independent PyTorch reference, full logits at every position.
func TestBundledModelAgainstPyTorch(t *testing.T) {
	ref := loadReference(t, "forgepipe-tiny.json")
	m, err := model.Open(testutil.BundledModel(t), model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	worst := compareWithReference(t, m, ref, 1e-4)
	t.Logf("forgepipe-tiny (F16): max relative logit error %.3g over %d runs", worst, len(ref.Runs))
}

// TestStories260KAgainstPyTorch: the SentencePiece model (all F32), checked
// against the independent PyTorch reference, and its text is readable.
func TestStories260KAgainstPyTorch(t *testing.T) {
	ref := loadReference(t, "stories260K.json")
	m, err := model.Open(testutil.Testdata(t, "stories260K.gguf"), model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	worst := compareWithReference(t, m, ref, 1e-4)
	t.Logf("stories260K (F32): max relative logit error %.3g", worst)
	text := m.Tokenizer.Decode(ref.Runs[0].GeneratedIDs)
	if len(text) < 20 {
		t.Errorf("decoded continuation %q is too short", text)
	}
	t.Logf("continuation: %q", text)
}

// margin is the gap between the two largest values.
func margin(x []float32) float64 {
	a, b := math.Inf(-1), math.Inf(-1)
	for _, v := range x {
		switch f := float64(v); {
		case f > a:
			a, b = f, a
		case f > b:
			b = f
		}
	}
	return a - b
}
