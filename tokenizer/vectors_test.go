package tokenizer

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/internal/testutil"
)

// vectorCase is one of llama.cpp's tokenizer test strings with its ids.
type vectorCase struct {
	text string
	ids  []int32
}

// readVectors parses NAME.gguf.inp/.out the way llama.cpp's
// test-tokenizer-0 does: strings are separated by
// "\n__ggml_vocab_test__\n" (each string, the last included, is followed by
// one), and the .out file has one line of space-separated ids per string.
func readVectors(t testing.TB, inpPath, outPath string) []vectorCase {
	t.Helper()
	inp, err := os.ReadFile(inpPath)
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	const sep = "\n__ggml_vocab_test__\n"
	var texts []string
	rest := string(inp)
	for {
		i := strings.Index(rest, sep)
		if i < 0 {
			break
		}
		texts = append(texts, rest[:i])
		rest = rest[i+len(sep):]
	}
	if rest != "" {
		t.Fatalf("%s: %d bytes after the last separator", inpPath, len(rest))
	}
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) != len(texts) {
		t.Fatalf("%s has %d strings, %s has %d lines", inpPath, len(texts), outPath, len(lines))
	}
	cases := make([]vectorCase, len(texts))
	for i, line := range lines {
		cases[i].text = texts[i]
		for _, f := range strings.Fields(line) {
			id, err := strconv.ParseInt(f, 10, 32)
			if err != nil {
				t.Fatalf("%s line %d: %v", outPath, i+1, err)
			}
			cases[i].ids = append(cases[i].ids, int32(id))
		}
	}
	return cases
}

// loadTokenizer opens a GGUF file and builds its tokenizer.
func loadTokenizer(t testing.TB, path string) *Tokenizer {
	t.Helper()
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tok, err := FromGGUF(f.Metadata)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return tok
}

// checkVectors encodes every case (no BOS/EOS, special text not parsed)
// and requires llama.cpp's ids; it returns how many passed.
func checkVectors(t *testing.T, tok *Tokenizer, cases []vectorCase) int {
	t.Helper()
	pass := 0
	for i, c := range cases {
		got := tok.Encode(c.text, false, false)
		if slices.Equal(got, c.ids) || (len(got) == 0 && len(c.ids) == 0) {
			pass++
			continue
		}
		t.Errorf("case %d %q:\n got  %v\n want %v", i, c.text, got, c.ids)
	}
	return pass
}

// TestLlamaCppVectors checks llama.cpp's own tokenizer test vectors for
// every vocabulary in shared/vocab that has its GGUF file.
func TestLlamaCppVectors(t *testing.T) {
	dir := filepath.Join(testutil.SharedDir(t), "vocab")
	inps, err := filepath.Glob(filepath.Join(dir, "*.gguf.inp"))
	if err != nil || len(inps) == 0 {
		t.Fatalf("no *.gguf.inp in %s (%v)", dir, err)
	}
	ran := 0
	for _, inp := range inps {
		base := strings.TrimSuffix(filepath.Base(inp), ".inp")
		name := strings.TrimSuffix(strings.TrimPrefix(base, "ggml-vocab-"), ".gguf")
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, base)
			if _, err := os.Stat(path); err != nil {
				t.Skipf("%s: no vocabulary GGUF in shared/vocab (llama-bpe is checked by TestLlama3Vectors from shared/data)", base)
			}
			f, err := gguf.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			model, _ := f.Metadata.String(KeyModel)
			f.Close()
			if model != ModelSPM && model != ModelBPE && model != ModelWPM {
				t.Skipf("%s: tokenizer model %q is not implemented", base, model)
			}
			tok := loadTokenizer(t, path)
			cases := readVectors(t, inp, strings.TrimSuffix(inp, ".inp")+".out")
			pass := checkVectors(t, tok, cases)
			t.Logf("%s (%s/%s): %d/%d cases match llama.cpp", name, tok.Vocab().Model, tok.Vocab().Pre, pass, len(cases))
			ran++
		})
	}
	if ran < 8 {
		t.Errorf("only %d vocabularies checked, want the 8 llama/gpt2/bert ones", ran)
	}
}

func ExampleTokenizer_Encode() {
	// A tiny SentencePiece vocabulary: merges happen by score.
	v := &Vocab{
		Model:  ModelSPM,
		Tokens: []string{"<unk>", "<s>", "</s>", "▁", "h", "i", "▁h", "▁hi"},
		Scores: []float32{0, 0, 0, -1, -2, -2, -1.5, -1},
		Types:  []int32{TokenUnknown, TokenControl, TokenControl, 1, 1, 1, 1, 1},
		BOS:    1, EOS: 2, UNK: 0, PAD: -1, EOT: -1, EOM: -1,
		AddBOS: true, AddSpacePrefix: true,
	}
	tok, err := New(v)
	if err != nil {
		panic(err)
	}
	ids := tok.Encode("hi", true, false)
	fmt.Println(ids, tok.Decode(ids))
	// Output: [1 7]  hi
}

// TestWordPieceSpecial checks BERT's [CLS] ... [SEP] framing.
func TestWordPieceSpecial(t *testing.T) {
	tok := loadTokenizer(t, filepath.Join(testutil.SharedDir(t), "vocab", "ggml-vocab-bert-bge.gguf"))
	v := tok.Vocab()
	if v.BOS != 101 || v.SEP != 102 || v.UNK != 100 || v.NoLowercase || v.KeepAccents {
		t.Fatalf("bert-bge vocabulary: %+v", summary(v))
	}
	plain := tok.Encode("Hello World!", false, false)
	framed := tok.Encode("Hello World!", true, false)
	want := append(append([]int32{101}, plain...), 102)
	if !slices.Equal(framed, want) {
		t.Errorf("addSpecial: %v, want %v", framed, want)
	}
	if got := tok.Detokenize(plain, false, false); got != " hello world!" {
		t.Errorf("Detokenize = %q", got)
	}
}
