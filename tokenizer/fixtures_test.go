package tokenizer

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/forgepipe/forgepipe/gguf"
)

// Reference fixtures under testdata/, produced on another machine with
// independent implementations (scripts/reference/):
//
//   - llama3_tiktoken.json: {"cases": [{"text", "ids"}]}, tiktoken's
//     encode_ordinary with Llama 3.2's tokenizer (no special tokens).
//   - spm/vocab.json: a SentencePiece BPE model trained on War and Peace
//     (tokens, scores, types, bos, eos, unk, add_space_prefix), and
//     spm/cases.json: sentencepiece's own ids for hard strings, no BOS.

type fixtureCases struct {
	Cases []struct {
		Text string  `json:"text"`
		IDs  []int32 `json:"ids"`
	} `json:"cases"`
}

// readFixture unmarshals testdata/name into v, skipping the test when the
// fixture is absent.
func readFixture(t *testing.T, name string, v any) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if errors.Is(err, fs.ErrNotExist) {
		t.Skipf("fixture testdata/%s not present (made by scripts/reference on the device machine)", name)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("testdata/%s: %v", name, err)
	}
}

// checkFixture encodes each case without special tokens and compares.
func checkFixture(t *testing.T, tok *Tokenizer, fc *fixtureCases) int {
	t.Helper()
	if len(fc.Cases) == 0 {
		t.Fatal("fixture has no cases")
	}
	pass := 0
	for i, c := range fc.Cases {
		got := tok.Encode(c.Text, false, false)
		if slices.Equal(got, c.IDs) || (len(got) == 0 && len(c.IDs) == 0) {
			pass++
			continue
		}
		t.Errorf("case %d %q:\n got  %v\n want %v", i, c.Text, got, c.IDs)
	}
	return pass
}

// TestLlama3Tiktoken compares Llama 3.2 (llama-bpe) with tiktoken.
func TestLlama3Tiktoken(t *testing.T) {
	var fc fixtureCases
	readFixture(t, "llama3_tiktoken.json", &fc)
	tok := llama3Tokenizer(t)
	pass := checkFixture(t, tok, &fc)
	t.Logf("llama-bpe vs tiktoken: %d/%d cases match", pass, len(fc.Cases))
	// tiktoken's ids decode back to the text.
	for _, c := range fc.Cases {
		if got := tok.Decode(c.IDs); got != c.Text {
			t.Errorf("Decode(tiktoken ids of %q) = %q", c.Text, got)
		}
	}
}

type spmFixture struct {
	Tokens         []string  `json:"tokens"`
	Scores         []float32 `json:"scores"`
	Types          []int32   `json:"types"`
	BOS            int32     `json:"bos"`
	EOS            int32     `json:"eos"`
	UNK            int32     `json:"unk"`
	AddSpacePrefix bool      `json:"add_space_prefix"`
}

// TestSPMSentencepiece compares the SPM tokenizer with sentencepiece, for
// the vocabulary built in Go and for the same vocabulary written to a GGUF
// file with the gguf writer and read back with VocabFromGGUF.
func TestSPMSentencepiece(t *testing.T) {
	var sv spmFixture
	readFixture(t, "spm/vocab.json", &sv)
	var fc fixtureCases
	readFixture(t, "spm/cases.json", &fc)

	direct := &Vocab{
		Model: ModelSPM, Tokens: sv.Tokens, Scores: sv.Scores, Types: sv.Types,
		BOS: sv.BOS, EOS: sv.EOS, UNK: sv.UNK, PAD: -1, EOT: -1, EOM: -1,
		AddBOS: true, AddSpacePrefix: sv.AddSpacePrefix,
	}
	// The GGUF file is written key by key (not with Vocab.SetMetadata), as
	// llama.cpp's convert script would: add_bos_token left to its default.
	md := metadataOf(t, func(w *gguf.Writer) {
		w.Set("general.architecture", "llama")
		w.Set(KeyModel, "llama")
		w.Set(KeyTokens, sv.Tokens)
		w.Set(KeyScores, sv.Scores)
		w.Set(KeyTokenType, sv.Types)
		w.Set(KeyBOS, uint32(sv.BOS))
		w.Set(KeyEOS, uint32(sv.EOS))
		w.Set(KeyUNK, uint32(sv.UNK))
		w.Set(KeyAddSpacePrefix, sv.AddSpacePrefix)
	})
	fromFile, err := VocabFromGGUF(md)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		v    *Vocab
	}{{"go", direct}, {"gguf", fromFile}} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := New(tc.v)
			if err != nil {
				t.Fatal(err)
			}
			if !tok.AddBOS() || tok.BOS() != sv.BOS || tok.EOS() != sv.EOS {
				t.Errorf("AddBOS %v BOS %d EOS %d", tok.AddBOS(), tok.BOS(), tok.EOS())
			}
			pass := checkFixture(t, tok, &fc)
			t.Logf("SPM (%s) vs sentencepiece: %d/%d cases match", tc.name, pass, len(fc.Cases))
			for _, c := range fc.Cases {
				// llama_detokenize removes the dummy prefix again.
				if got := tok.Detokenize(c.IDs, false, false); got != c.Text {
					t.Errorf("Detokenize(sentencepiece ids of %q) = %q", c.Text, got)
				}
			}
			if got := tok.Encode("Prince Andrew", true, false); got[0] != sv.BOS {
				t.Errorf("Encode with addSpecial = %v, want BOS first", got)
			}
		})
	}
}
