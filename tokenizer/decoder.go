package tokenizer

import (
	"strings"
	"unicode/utf8"
)

// Decoder turns a stream of token ids into text, one token at a time. A
// character whose UTF-8 bytes are spread over several tokens (byte tokens
// such as <0xE2><0x82><0xAC>, or byte-level BPE pieces) is held back until
// it is complete, so every string returned is valid UTF-8, and the
// concatenation of all Next results and Flush equals Tokenizer.Decode of
// all the ids. A Decoder is not safe for concurrent use; make one per
// sequence.
type Decoder struct {
	t       *Tokenizer
	pending []byte
	sb      strings.Builder
}

// NewDecoder returns a streaming decoder for this tokenizer.
func (t *Tokenizer) NewDecoder() *Decoder {
	return &Decoder{t: t}
}

// Next adds one token and returns the text that became complete (often
// "", e.g. for control tokens or the first bytes of a character).
func (d *Decoder) Next(id int32) string {
	p := d.t.pieceText(id)
	if p == "" {
		return ""
	}
	if len(d.pending) == 0 && utf8.ValidString(p) {
		return p
	}
	d.pending = append(d.pending, p...)
	d.sb.Reset()
	rest := appendValid(&d.sb, d.pending)
	d.pending = append(d.pending[:0], rest...)
	return d.sb.String()
}

// Flush returns what is still held back (an incomplete character, as one
// U+FFFD per byte) and resets the decoder.
func (d *Decoder) Flush() string {
	d.sb.Reset()
	appendFlush(&d.sb, d.pending)
	d.pending = d.pending[:0]
	return d.sb.String()
}
