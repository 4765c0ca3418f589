package tokenizer

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// words cuts cpts into strings by offsets.
func words(cpts []rune, offsets []int) []string {
	var out []string
	pos := 0
	for _, n := range offsets {
		out = append(out, string(cpts[pos:pos+n]))
		pos += n
	}
	return out
}

// splitAlphabet mixes what the pre-tokenizer regexes tell apart: ASCII and
// non-ASCII letters, digits, marks, punctuation, symbols, ASCII and Unicode
// whitespace, control and unassigned codepoints, and contraction letters.
var splitAlphabet = []rune("aZsStTmMdDrReEvVlL'' \t\n\r\v\f  09½٣.,!?-$+<=>^~|`\"(" +
	"éßΣжא中文한😀\u0301\u00a0\u2009\u3000\u2028\u0085\u0000\u001f\u200b\u0378\uE000")

func randomText(rng *rand.Rand, n int) string {
	rs := make([]rune, n)
	for i := range rs {
		rs[i] = splitAlphabet[rng.IntN(len(splitAlphabet))]
	}
	return string(rs)
}

// TestFastSplittersMatchRegex checks the hand-written GPT-2 and Llama 3
// splitters (the fast paths, ported from llama.cpp's unicode.cpp) against
// the general regexp2 path running the same patterns, on random text and
// on random pre-segmented text.
func TestFastSplittersMatchRegex(t *testing.T) {
	tests := []struct {
		name string
		fast splitter
		re   string
	}{
		// llama.cpp's GPT-2 splitter also implements the trailing \s+
		// alternative of the original GPT-2 regex.
		{"gpt2", gpt2Splitter{}, reGPT2 + `|\s+`},
		{"llama3", llama3Splitter{}, reLlama3},
	}
	rng := rand.New(rand.NewPCG(7, 11))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ref, err := newRegexSplitter(tc.re)
			if err != nil {
				t.Fatal(err)
			}
			for iter := 0; iter < 3000; iter++ {
				cpts := []rune(randomText(rng, 1+rng.IntN(30)))
				offsets := []int{len(cpts)}
				if iter%2 == 1 { // start from several segments
					offsets = nil
					for rest := len(cpts); rest > 0; {
						n := min(rest, 1+rng.IntN(8))
						offsets = append(offsets, n)
						rest -= n
					}
				}
				got := tc.fast.split(cpts, offsets)
				want := ref.split(cpts, offsets)
				if !slices.Equal(got, want) {
					t.Fatalf("%q (segments %v):\n fast  %q\n regex %q", string(cpts), offsets, words(cpts, got), words(cpts, want))
				}
			}
		})
	}
}

func TestSplitExamples(t *testing.T) {
	tests := []struct {
		pre, text string
		want      []string
	}{
		{"gpt-2", "Hello world  it's 2024!!", []string{"Hello", " world", " ", " it", "'s", " 2024", "!!"}},
		{"llama-bpe", "I'VE 12345 apples\n\n  ok", []string{"I", "'VE", " ", "123", "45", " apples", "\n\n", " ", " ok"}},
		{"qwen2", "abc 123", []string{"abc", " ", "1", "2", "3"}},
		{"deepseek-coder", "foo(bar)\n12", []string{"foo", "(", "bar", ")", "\n", "1", "2"}},
		// falcon isolates punctuation runs first, then GPT-2, then digit triples.
		{"falcon", "x = 1234;", []string{"x", " ", "=", " ", "123", "4", ";"}},
	}
	for _, tc := range tests {
		t.Run(tc.pre, func(t *testing.T) {
			b := &bpe{}
			for _, r := range preTokenizers[tc.pre].regexes {
				s, err := newSplitter(r)
				if err != nil {
					t.Fatal(err)
				}
				b.splitters = append(b.splitters, s)
			}
			var got []string
			b.words(tc.text, func(w string) { got = append(got, w) })
			if !slices.Equal(got, tc.want) {
				t.Errorf("%q: got %q, want %q", tc.text, got, tc.want)
			}
		})
	}
}

func TestCollapseRegex(t *testing.T) {
	got := collapseRegex(`[^\r\n\p{L}\p{N}]?\p{L}+`)
	want := `[^\r\n\u00D2A-Za-z\u00D10-9]?[\u00D2A-Za-z]+`
	if got != want {
		t.Errorf("collapseRegex = %s, want %s", got, want)
	}
	p, err := ecmaToRegexp2(`\s+(?!\S)|[^\s]$`)
	if err != nil || !strings.Contains(p, `(?![^\t\n\v\f\r ])`) || !strings.HasSuffix(p, `\z`) {
		t.Errorf("ecmaToRegexp2 = %s, %v", p, err)
	}
}
