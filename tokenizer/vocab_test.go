package tokenizer

import (
	"bytes"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/forgepipe/forgepipe/gguf"
	"github.com/forgepipe/forgepipe/internal/testutil"
)

// metadataOf writes kvs with the gguf writer and parses them back.
func metadataOf(t testing.TB, set func(w *gguf.Writer)) *gguf.Metadata {
	t.Helper()
	w := gguf.NewWriter()
	set(w)
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.FromBytes(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return f.Metadata
}

// TestVocabGGUFRoundTrip writes real vocabularies with SetMetadata and
// reads them back: the same Vocab and the same ids.
func TestVocabGGUFRoundTrip(t *testing.T) {
	vocabs := testVocabs(t)
	vocabs["bert-bge"] = loadTokenizer(t, filepath.Join(testutil.SharedDir(t), "vocab", "ggml-vocab-bert-bge.gguf"))
	for name, tok := range vocabs {
		t.Run(name, func(t *testing.T) {
			v := tok.Vocab()
			md := metadataOf(t, v.SetMetadata)
			back, err := VocabFromGGUF(md)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, v) {
				t.Errorf("vocabulary changed through GGUF:\n got  %+v\n want %+v", summary(back), summary(v))
			}
			tok2, err := New(back)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range roundTripTexts {
				if a, b := tok.Encode(s, true, true), tok2.Encode(s, true, true); !slices.Equal(a, b) {
					t.Errorf("%q: %v before, %v after", s, a, b)
				}
			}
		})
	}
}

func summary(v *Vocab) Vocab {
	s := *v
	s.Tokens, s.Scores, s.Types, s.Merges = s.Tokens[:3], nil, nil, nil
	return s
}

func TestVocabDefaults(t *testing.T) {
	tokens := []string{"<unk>", "<s>", "</s>", "a", "b", "ab", "c", "d", "e", "f", "g", "h", "<|endoftext|>"}
	tests := []struct {
		name  string
		set   func(w *gguf.Writer)
		check func(t *testing.T, v *Vocab)
	}{
		{"spm defaults", func(w *gguf.Writer) {
			w.Set(KeyModel, "llama")
			w.Set(KeyTokens, tokens)
		}, func(t *testing.T, v *Vocab) {
			if v.BOS != 1 || v.EOS != 2 || v.UNK != 0 || v.PAD != -1 || !v.AddBOS || v.AddEOS || !v.AddSpacePrefix {
				t.Errorf("got %+v", summary(v))
			}
			if v.EOT != 12 { // found by its text
				t.Errorf("EOT %d, want 12 (<|endoftext|>)", v.EOT)
			}
		}},
		{"spm keys", func(w *gguf.Writer) {
			w.Set(KeyModel, "llama")
			w.Set(KeyTokens, tokens)
			w.Set(KeyBOS, uint32(3))
			w.Set(KeyEOS, uint32(99)) // out of range: default kept
			w.Set(KeyAddSpacePrefix, false)
			w.Set(KeyAddEOS, true)
			w.Set(KeyChatTemplate, "{{x}}")
		}, func(t *testing.T, v *Vocab) {
			if v.BOS != 3 || v.EOS != 2 || v.AddSpacePrefix || !v.AddEOS || v.ChatTemplate != "{{x}}" {
				t.Errorf("got %+v", summary(v))
			}
		}},
		{"gpt2 gpt-2", func(w *gguf.Writer) {
			w.Set(KeyModel, "gpt2")
			w.Set(KeyPre, "gpt-2")
			w.Set(KeyTokens, tokens)
			w.Set(KeyMerges, []string{"a b"})
		}, func(t *testing.T, v *Vocab) {
			if v.BOS != 11 || v.EOS != 11 || v.UNK != -1 || v.AddBOS || v.AddSpacePrefix {
				t.Errorf("got %+v", summary(v))
			}
		}},
		{"gpt2 llama-bpe", func(w *gguf.Writer) {
			w.Set(KeyModel, "gpt2")
			w.Set(KeyPre, "llama-bpe")
			w.Set(KeyTokens, tokens[:5]) // default BOS 11 out of range
			w.Set(KeyMerges, []string{"a b"})
			w.Set(KeyBOS, uint32(1))
		}, func(t *testing.T, v *Vocab) {
			if v.BOS != 1 || v.EOS != -1 || !v.AddBOS {
				t.Errorf("got %+v", summary(v))
			}
		}},
		{"bert", func(w *gguf.Writer) {
			w.Set(KeyModel, "bert")
			w.Set(KeyTokens, tokens)
			w.Set(KeyBOS, uint32(1))
			w.Set(KeySEP, uint32(2))
			w.Set(KeyLowercase, false)
		}, func(t *testing.T, v *Vocab) {
			if v.BOS != 1 || v.SEP != 2 || v.EOS != -1 || v.PAD != 0 || !v.AddBOS || !v.NoLowercase || !v.KeepAccents {
				t.Errorf("got %+v", summary(v))
			}
		}},
		{"int scores", func(w *gguf.Writer) {
			w.Set(KeyModel, "llama")
			w.Set(KeyTokens, tokens[:3])
			w.Set(KeyScores, []int32{-1, -2, -3})
		}, func(t *testing.T, v *Vocab) {
			if !slices.Equal(v.Scores, []float32{-1, -2, -3}) {
				t.Errorf("scores %v", v.Scores)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := VocabFromGGUF(metadataOf(t, tc.set))
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, v)
		})
	}
}

func TestVocabErrors(t *testing.T) {
	tokens := []string{"<unk>", "<s>", "</s>", "a", "b", "ab"}
	tests := []struct {
		name    string
		set     func(w *gguf.Writer)
		wantErr error
		wantMsg string
	}{
		{"no model", func(w *gguf.Writer) { w.Set(KeyTokens, tokens) }, ErrInvalidVocab, KeyModel},
		{"t5", func(w *gguf.Writer) {
			w.Set(KeyModel, "t5")
			w.Set(KeyTokens, tokens)
		}, ErrUnsupported, `supported: "llama", "gpt2", "bert"`},
		{"bert without sep", func(w *gguf.Writer) {
			w.Set(KeyModel, "bert")
			w.Set(KeyTokens, tokens)
			w.Set(KeyBOS, uint32(1))
		}, ErrInvalidVocab, KeySEP},
		{"no tokens", func(w *gguf.Writer) { w.Set(KeyModel, "llama") }, ErrInvalidVocab, KeyTokens},
		{"tokens not strings", func(w *gguf.Writer) {
			w.Set(KeyModel, "llama")
			w.Set(KeyTokens, []int32{1, 2})
		}, ErrInvalidVocab, KeyTokens},
		{"short scores", func(w *gguf.Writer) {
			w.Set(KeyModel, "llama")
			w.Set(KeyTokens, tokens)
			w.Set(KeyScores, []float32{0, 0})
		}, ErrInvalidVocab, "2 entries for 6 tokens"},
		{"short types", func(w *gguf.Writer) {
			w.Set(KeyModel, "llama")
			w.Set(KeyTokens, tokens)
			w.Set(KeyTokenType, []int32{1})
		}, ErrInvalidVocab, KeyTokenType},
		{"scores not numbers", func(w *gguf.Writer) {
			w.Set(KeyModel, "llama")
			w.Set(KeyTokens, tokens)
			w.Set(KeyScores, tokens)
		}, ErrInvalidVocab, KeyScores},
		{"gpt2 without merges", func(w *gguf.Writer) {
			w.Set(KeyModel, "gpt2")
			w.Set(KeyTokens, tokens)
		}, ErrInvalidVocab, KeyMerges},
		{"add_bos without bos", func(w *gguf.Writer) {
			w.Set(KeyModel, "gpt2")
			w.Set(KeyTokens, tokens)
			w.Set(KeyMerges, []string{"a b"})
			w.Set(KeyAddBOS, true)
		}, ErrInvalidVocab, "bos_token_id is not set"},
		{"pre not a string", func(w *gguf.Writer) {
			w.Set(KeyModel, "gpt2")
			w.Set(KeyPre, uint32(3))
			w.Set(KeyTokens, tokens)
		}, ErrInvalidVocab, KeyPre},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := VocabFromGGUF(metadataOf(t, tc.set))
			if !errors.Is(err, tc.wantErr) || !strings.Contains(fmtErr(err), tc.wantMsg) {
				t.Fatalf("err = %v, want %v containing %q", err, tc.wantErr, tc.wantMsg)
			}
		})
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestNewErrors(t *testing.T) {
	base := func() *Vocab {
		return &Vocab{Model: ModelBPE, Pre: "gpt-2", Tokens: []string{"a", "b", "ab"}, Merges: []string{"a b"},
			BOS: -1, EOS: -1, UNK: -1, PAD: -1, EOT: -1, EOM: -1}
	}
	tests := []struct {
		name    string
		edit    func(v *Vocab)
		wantErr error
		wantMsg string
	}{
		{"unknown pre", func(v *Vocab) { v.Pre = "no-such-pre" }, ErrUnsupported, "llama-bpe"},
		{"unknown model", func(v *Vocab) { v.Model = "t5" }, ErrUnsupported, "t5"},
		{"duplicate", func(v *Vocab) { v.Tokens[2] = "a" }, ErrInvalidVocab, "duplicate"},
		{"bos out of range", func(v *Vocab) { v.BOS = 3 }, ErrInvalidVocab, "BOS"},
		{"add bos without bos", func(v *Vocab) { v.AddBOS = true }, ErrInvalidVocab, "AddBOS"},
		{"short types", func(v *Vocab) { v.Types = []int32{1} }, ErrInvalidVocab, "types"},
		{"empty", func(v *Vocab) { v.Tokens = nil }, ErrInvalidVocab, "no tokens"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := base()
			tc.edit(v)
			_, err := New(v)
			if !errors.Is(err, tc.wantErr) || !strings.Contains(fmtErr(err), tc.wantMsg) {
				t.Fatalf("err = %v, want %v containing %q", err, tc.wantErr, tc.wantMsg)
			}
		})
	}
	if _, err := New(nil); !errors.Is(err, ErrInvalidVocab) {
		t.Errorf("New(nil) = %v", err)
	}
	// An absent pre-tokenizer is llama.cpp's "default".
	v := base()
	v.Pre = ""
	if _, err := New(v); err != nil {
		t.Errorf("empty pre: %v", err)
	}
}

// TestSupportedPreTokenizersCompile builds every supported pre-tokenizer
// and runs it on a hard string, so that no regex fails to compile or
// panics at run time.
func TestSupportedPreTokenizersCompile(t *testing.T) {
	tok := loadTokenizer(t, filepath.Join(testutil.SharedDir(t), "vocab", "ggml-vocab-gpt-2.gguf"))
	seen := map[string]bool{}
	for _, pre := range append(SupportedPreTokenizers(), "") {
		key := strings.Join(preTokenizers[pre].regexes, "\x00")
		if seen[key] {
			continue // same regexes as one already run
		}
		seen[key] = true
		v := *tok.Vocab()
		v.Pre = pre
		tk, err := New(&v)
		if err != nil {
			t.Errorf("pre %q: %v", pre, err)
			continue
		}
		for _, s := range roundTripTexts {
			if got := tk.Decode(tk.Encode(s, false, false)); got != s {
				t.Errorf("pre %q: round trip of %q gave %q", pre, s, got)
			}
		}
	}
}
