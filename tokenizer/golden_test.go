package tokenizer

import (
	"slices"
	"strings"
	"testing"

	"github.com/forgepipe/forgepipe/internal/testutil"
)

func TestBundledModelGolden(t *testing.T) {
	tok := loadTokenizer(t, testutil.BundledModel(t))
	prompts := testutil.Golden(t)
	v := tok.Vocab()
	if v.Model != ModelBPE || v.Pre != "gpt-2" || tok.VocabSize() != 4096 || !tok.AddBOS() || tok.BOS() != 0 || tok.EOS() != 1 {
		t.Fatalf("bundled vocabulary: model %q pre %q size %d addBOS %v BOS %d EOS %d; want gpt2/gpt-2/4096/true/0/1",
			v.Model, v.Pre, tok.VocabSize(), tok.AddBOS(), tok.BOS(), tok.EOS())
	}
	if !tok.IsEOG(1) || tok.IsEOG(0) {
		t.Errorf("IsEOG(EOS=1) = %v, IsEOG(BOS=0) = %v", tok.IsEOG(1), tok.IsEOG(0))
	}
	for _, p := range prompts {
		if got := tok.Encode(p.Prompt, true, true); !slices.Equal(got, p.PromptIDs) {
			t.Errorf("Encode(%q) = %v, want %v", p.Prompt, got, p.PromptIDs)
		}
		if got := tok.Decode(p.GeneratedIDs); got != p.Text {
			t.Errorf("Decode(generated for %q) = %q, want %q", p.Prompt, got, p.Text)
		}
		// Streaming gives the same text.
		d := tok.NewDecoder()
		var sb strings.Builder
		for _, id := range p.GeneratedIDs {
			sb.WriteString(d.Next(id))
		}
		sb.WriteString(d.Flush())
		if sb.String() != p.Text {
			t.Errorf("streamed %q, want %q", sb.String(), p.Text)
		}
		// The BOS the prompt starts with is a control token: not rendered.
		if got := tok.Decode(p.PromptIDs); got != p.Prompt {
			t.Errorf("Decode(prompt ids) = %q, want %q", got, p.Prompt)
		}
	}
}

// TestStories260K loads the SentencePiece tokenizer of testdata's
// stories260K model (no reference ids exist for it: the checks are
// structural).
func TestStories260K(t *testing.T) {
	tok := loadTokenizer(t, testutil.Testdata(t, "stories260K.gguf"))
	if tok.VocabSize() != 512 || tok.Vocab().Model != ModelSPM || tok.BOS() != 1 || tok.EOS() != 2 || !tok.AddBOS() {
		t.Fatalf("vocab %d %q BOS %d EOS %d addBOS %v", tok.VocabSize(), tok.Vocab().Model, tok.BOS(), tok.EOS(), tok.AddBOS())
	}
	for _, s := range []string{"Once upon a time, there was a little girl named Lily.", "Hello 世界 🦙", ""} {
		ids := tok.Encode(s, true, false)
		if ids[0] != 1 {
			t.Errorf("Encode(%q) = %v, want BOS first", s, ids)
		}
		if s == "" && len(ids) != 1 {
			t.Errorf("Encode(\"\") = %v, want just BOS", ids)
		}
		// llama_detokenize strips the dummy-prefix space only when the
		// first token is not a (removed) BOS.
		if got := tok.Detokenize(ids[1:], false, false); got != s {
			t.Errorf("Detokenize(Encode(%q) without BOS) = %q", s, got)
		}
		if got := tok.Detokenize(ids, true, false); s != "" && got != " "+s {
			t.Errorf("Detokenize(Encode(%q), removeSpecial) = %q, want the space kept", s, got)
		}
		if got := tok.Decode(ids); got != " "+s && !(s == "" && got == "") {
			t.Errorf("Decode(Encode(%q)) = %q, want the leading space kept", s, got)
		}
	}
}
