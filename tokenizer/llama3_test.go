package tokenizer

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/forgepipe/forgepipe/internal/testutil"
)

// llama3Specials are Llama 3.1/3.2's 256 special tokens from id 128000,
// as Meta's tokenizer defines them.
func llama3Specials() []string {
	s := []string{
		"<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
		"<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
		"<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
	}
	for i := 3; len(s) < 256; i++ {
		s = append(s, fmt.Sprintf("<|reserved_special_token_%d|>", i))
	}
	return s
}

// buildGPT2FormatVocab reads a GPT-2 style tokenizer (encoder.json: token
// -> id; vocab.bpe: merges, after an optional "#version" line).
func buildGPT2FormatVocab(encoderPath, mergesPath string) (*Vocab, error) {
	raw, err := os.ReadFile(encoderPath)
	if err != nil {
		return nil, err
	}
	var enc map[string]int32
	if err := json.Unmarshal(raw, &enc); err != nil {
		return nil, fmt.Errorf("%s: %w", encoderPath, err)
	}
	tokens := make([]string, len(enc))
	for s, id := range enc {
		if id < 0 || int(id) >= len(tokens) || tokens[id] != "" {
			return nil, fmt.Errorf("%s: id %d out of range or repeated", encoderPath, id)
		}
		tokens[id] = s
	}
	mraw, err := os.ReadFile(mergesPath)
	if err != nil {
		return nil, err
	}
	var merges []string
	for i, line := range strings.Split(string(mraw), "\n") {
		if line == "" || (i == 0 && strings.HasPrefix(line, "#version")) {
			continue
		}
		merges = append(merges, line)
	}
	return &Vocab{Model: ModelBPE, Tokens: tokens, Merges: merges,
		BOS: -1, EOS: -1, UNK: -1, PAD: -1, EOT: -1, EOM: -1}, nil
}

var llama3 struct {
	once sync.Once
	tok  *Tokenizer
	err  error
}

// llama3Tokenizer is Llama 3.2's tokenizer built from shared/data, shared by
// the tests that need it.
func llama3Tokenizer(t testing.TB) *Tokenizer {
	t.Helper()
	dir := filepath.Join(testutil.SharedDir(t), "data", "llama3.2-tokenizer")
	llama3.once.Do(func() {
		v, err := buildGPT2FormatVocab(filepath.Join(dir, "encoder.json"), filepath.Join(dir, "vocab.bpe"))
		if err != nil {
			llama3.err = err
			return
		}
		v.Pre = "llama-bpe"
		v.Types = make([]int32, len(v.Tokens), len(v.Tokens)+256)
		for i := range v.Types {
			v.Types[i] = TokenNormal
		}
		for _, s := range llama3Specials() {
			v.Tokens = append(v.Tokens, s)
			v.Types = append(v.Types, TokenControl)
		}
		v.BOS, v.EOS, v.EOM, v.EOT = 128000, 128001, 128008, 128009
		v.AddBOS = true
		llama3.tok, llama3.err = New(v)
	})
	if llama3.err != nil {
		t.Fatal(llama3.err)
	}
	return llama3.tok
}

// TestLlama3Vectors checks llama.cpp's llama-bpe vectors against Llama 3.2's
// vocabulary built in Go from the GPT-2 format files.
func TestLlama3Vectors(t *testing.T) {
	tok := llama3Tokenizer(t)
	if tok.VocabSize() != 128256 {
		t.Fatalf("vocabulary size %d, want 128256", tok.VocabSize())
	}
	dir := filepath.Join(testutil.SharedDir(t), "vocab")
	cases := readVectors(t, filepath.Join(dir, "ggml-vocab-llama-bpe.gguf.inp"), filepath.Join(dir, "ggml-vocab-llama-bpe.gguf.out"))
	pass := checkVectors(t, tok, cases)
	t.Logf("llama-bpe (built from encoder.json + vocab.bpe): %d/%d cases match llama.cpp", pass, len(cases))
}

func TestLlama3Special(t *testing.T) {
	tok := llama3Tokenizer(t)
	const text = "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
	tests := []struct {
		name                     string
		addSpecial, parseSpecial bool
		wantFirst                int32
		wantControl              int // control tokens expected in the output
	}{
		{"plain", false, false, -1, 0},
		{"bos", true, false, 128000, 1},
		{"parse", false, true, 128006, 3},
		{"both", true, true, 128000, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ids := tok.Encode(text, tc.addSpecial, tc.parseSpecial)
			n := 0
			for _, id := range ids {
				if tok.IsControl(id) {
					n++
				}
			}
			if n != tc.wantControl {
				t.Errorf("%v: %d control tokens, want %d", ids, n, tc.wantControl)
			}
			if tc.wantFirst >= 0 && ids[0] != tc.wantFirst {
				t.Errorf("first id %d, want %d", ids[0], tc.wantFirst)
			}
			// Control tokens are not rendered; parsed or not, the
			// visible text is the same apart from their markup.
			want := text
			if tc.parseSpecial {
				want = "user\n\nHi"
			}
			if got := tok.Decode(ids); got != want {
				t.Errorf("Decode = %q, want %q", got, want)
			}
			if got := tok.Detokenize(ids, false, true); !strings.HasSuffix(got, text) {
				t.Errorf("Detokenize(unparse) = %q, want ...%q", got, text)
			}
		})
	}
	if !tok.IsEOG(128009) || !tok.IsEOG(128001) || !tok.IsEOG(128008) || tok.IsEOG(128000) {
		t.Error("EOG set: want eot, end_of_text and eom, not begin_of_text")
	}
}
