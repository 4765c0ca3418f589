package tokenizer

import (
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/forgepipe/forgepipe/internal/testutil"
)

// streamDecode feeds ids one by one, checking that each output is valid
// UTF-8, and returns the concatenation.
func streamDecode(t *testing.T, tok *Tokenizer, ids []int32) string {
	t.Helper()
	d := tok.NewDecoder()
	var sb strings.Builder
	for i, id := range ids {
		s := d.Next(id)
		if !utf8.ValidString(s) {
			t.Fatalf("Next(ids[%d]=%d) = %q: not valid UTF-8", i, id, s)
		}
		sb.WriteString(s)
	}
	s := d.Flush()
	if !utf8.ValidString(s) {
		t.Fatalf("Flush() = %q: not valid UTF-8", s)
	}
	sb.WriteString(s)
	if rest := d.Flush(); rest != "" {
		t.Fatalf("second Flush() = %q, want empty", rest)
	}
	return sb.String()
}

// testVocabs are the tokenizers the decode tests run on.
func testVocabs(t *testing.T) map[string]*Tokenizer {
	dir := filepath.Join(testutil.SharedDir(t), "vocab")
	return map[string]*Tokenizer{
		"bundled":   loadTokenizer(t, testutil.BundledModel(t)),
		"llama-spm": loadTokenizer(t, filepath.Join(dir, "ggml-vocab-llama-spm.gguf")),
		"gpt-2":     loadTokenizer(t, filepath.Join(dir, "ggml-vocab-gpt-2.gguf")),
		"llama3":    llama3Tokenizer(t),
	}
}

func TestDecoderRandomIDs(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for name, tok := range testVocabs(t) {
		t.Run(name, func(t *testing.T) {
			n := int32(tok.VocabSize())
			// Byte-level pieces of multi-byte characters: ids whose piece
			// is not valid UTF-8 on its own.
			var partial []int32
			for id := int32(0); id < n; id++ {
				if p := tok.Piece(id); p != "" && !utf8.ValidString(p) {
					partial = append(partial, id)
				}
			}
			if len(partial) == 0 {
				t.Fatal("no token with a partial UTF-8 piece")
			}
			for iter := 0; iter < 300; iter++ {
				ids := make([]int32, 1+rng.IntN(40))
				for i := range ids {
					if rng.IntN(2) == 0 {
						ids[i] = partial[rng.IntN(len(partial))]
					} else {
						ids[i] = rng.Int32N(n)
					}
				}
				if got, want := streamDecode(t, tok, ids), tok.Decode(ids); got != want {
					t.Fatalf("ids %v: streamed %q, Decode %q", ids, got, want)
				}
			}
		})
	}
}

func TestDecoderEuroAcrossByteTokens(t *testing.T) {
	tok := testVocabs(t)["llama-spm"]
	e2, ok1 := tok.tokenID["<0xE2>"]
	x82, ok2 := tok.tokenID["<0x82>"]
	ac, ok3 := tok.tokenID["<0xAC>"]
	if !ok1 || !ok2 || !ok3 {
		t.Fatal("llama-spm lacks byte tokens")
	}
	d := tok.NewDecoder()
	for i, id := range []int32{e2, x82} {
		if s := d.Next(id); s != "" {
			t.Fatalf("Next(byte %d) = %q before the character is complete", i, s)
		}
	}
	if s := d.Next(ac); s != "€" {
		t.Fatalf("Next(<0xAC>) = %q, want €", s)
	}
	// An incomplete character at the end comes out as U+FFFD per byte.
	d.Next(e2)
	d.Next(x82)
	if s := d.Flush(); s != "\uFFFD\uFFFD" {
		t.Fatalf("Flush = %q, want two U+FFFD", s)
	}
	ids := []int32{e2, x82, ac, e2}
	if got, want := tok.Decode(ids), "€\uFFFD"; got != want {
		t.Fatalf("Decode = %q, want %q", got, want)
	}
	if got := string(tok.DecodeBytes(ids)); got != "€\xE2" {
		t.Fatalf("DecodeBytes = %q, want raw bytes", got)
	}
}

// roundTripTexts are texts with CJK, emoji, combining marks, odd spaces.
var roundTripTexts = []string{
	"Hello, world! 你好，世界！ こんにちは 안녕하세요",
	"emoji 🦙🚀👩‍👩‍👧‍👦 and flags 🇫🇷🇯🇵",
	"Zalgo: Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇",
	"tabs\tand\r\nCRLF and  double  spaces   and trailing   ",
	"  leading spaces, numbers 1234567890 3.14159 1,000,000",
	"Ελληνικά, русский, עברית, العربية, हिन्दी, ไทย",
	"'s 'T 'Re I've you'LL he'd ''' \"quotes\" `code` ~!@#$%^&*()_+",
	"\u00a0nbsp\u2009thin\u3000ideographic\u2028line sep",
}

func TestRoundTrip(t *testing.T) {
	wp := warAndPeace(t)
	texts := append([]string(nil), roundTripTexts...)
	for i := 0; i < 20; i++ {
		off := 1000 + i*150000
		texts = append(texts, wp[off:off+2000])
	}
	for name, tok := range testVocabs(t) {
		t.Run(name, func(t *testing.T) {
			for _, text := range texts {
				ids := tok.Encode(text, false, false)
				want := text
				if tok.spm && tok.Vocab().AddSpacePrefix {
					want = " " + text // the leading space rule
				}
				if got := tok.Decode(ids); got != want {
					t.Errorf("Decode(Encode(%q)) = %q", text, got)
				}
				if got := streamDecode(t, tok, ids); got != want {
					t.Errorf("streamed Decode(Encode(%q)) = %q", text, got)
				}
				if tok.spm {
					// llama_detokenize drops the space the encoder added.
					if got := tok.Detokenize(ids, false, false); got != text {
						t.Errorf("Detokenize(Encode(%q)) = %q", text, got)
					}
				}
			}
		})
	}
}

func TestConcurrentEncode(t *testing.T) {
	wp := warAndPeace(t)
	tok := loadTokenizer(t, testutil.BundledModel(t))
	const workers, chunks = 8, 64
	want := make([][]int32, chunks)
	chunk := func(i int) string { return wp[i*20000 : i*20000+20000] }
	ref, err := New(tok.Vocab()) // separate cache
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		want[i] = ref.Encode(chunk(i), false, false)
	}
	var wg sync.WaitGroup
	errs := make(chan string, workers*chunks)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < chunks; j++ {
				i := (j + w*7) % chunks
				if got := tok.Encode(chunk(i), false, false); !slices.Equal(got, want[i]) {
					errs <- chunk(i)[:40]
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("concurrent Encode differs for chunk starting %q", e)
	}
}
