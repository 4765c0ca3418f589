package tokenizer

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/forgepipe/forgepipe/internal/testutil"
)

func warAndPeace(tb testing.TB) string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(testutil.SharedDir(tb), "data", "war-and-peace.txt"))
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// BenchmarkEncodeWarAndPeace encodes the whole book (3.2 MB) per iteration
// with the bundled model's tokenizer (gpt2, gpt-2 pre-tokenizer) and with
// Llama 3.2's. Each iteration uses a fresh tokenizer, so the word cache
// starts empty: the figure includes the BPE of every distinct word.
func BenchmarkEncodeWarAndPeace(b *testing.B) {
	text := warAndPeace(b)
	for _, bc := range []struct {
		name string
		load func(testing.TB) *Tokenizer
	}{
		{"bundled-gpt2", func(tb testing.TB) *Tokenizer { return loadTokenizer(tb, testutil.BundledModel(tb)) }},
		{"llama3", func(tb testing.TB) *Tokenizer { llama3Tokenizer(tb); return llama3.tok }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			base := bc.load(b)
			var n int
			b.SetBytes(int64(len(text)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				tok, err := New(base.Vocab())
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				n = len(tok.Encode(text, false, false))
			}
			sec := b.Elapsed().Seconds() / float64(b.N)
			b.ReportMetric(float64(len(text))/1e6/sec, "MB/s")
			b.ReportMetric(float64(n)/sec, "tokens/s")
		})
	}
}

// BenchmarkEncodeWarm encodes one paragraph-sized chunk again and again:
// the steady state of a server, where the word cache is warm.
func BenchmarkEncodeWarm(b *testing.B) {
	text := warAndPeace(b)[100000:104096]
	tok := loadTokenizer(b, testutil.BundledModel(b))
	tok.Encode(text, false, false) // fill the cache
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tok.Encode(text, false, false)
	}
	b.ReportMetric(float64(len(text))/1e6/(b.Elapsed().Seconds()/float64(b.N)), "MB/s")
}
