// Package chat renders chat messages into a prompt with a model's Jinja chat
// template (GGUF key tokenizer.chat_template, the Hugging Face
// chat_template), the way Hugging Face's apply_chat_template does: Jinja with
// trim_blocks and lstrip_blocks, the variables messages, add_generation_prompt,
// bos_token and eos_token, and a raise_exception function.
//
// A model without a template gets Fallback, a ChatML template
// (<|im_start|>role\ncontent<|im_end|>\n per message, then
// <|im_start|>assistant\n when a reply is wanted).
package chat

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/nikolalohinski/gonja/v2"
	"github.com/nikolalohinski/gonja/v2/builtins"
	"github.com/nikolalohinski/gonja/v2/config"
	"github.com/nikolalohinski/gonja/v2/exec"
	"github.com/nikolalohinski/gonja/v2/loaders"
)

// Errors callers branch on (with errors.Is).
var (
	// ErrTemplate: the template does not parse or fails while rendering.
	ErrTemplate = errors.New("chat: template error")
	// ErrRejected: the template refused the messages (raise_exception),
	// e.g. roles that do not alternate. The caller's input is at fault.
	ErrRejected = errors.New("chat: messages rejected by the chat template")
)

// FallbackSource is the template used for models that have none: ChatML,
// as Qwen2 and many fine-tunes use it.
const FallbackSource = `{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}`

// Message is one chat turn.
type Message struct {
	Role    string
	Content string
}

// Options are the variables a template sees besides the messages.
type Options struct {
	// AddGenerationPrompt ends the prompt with the opening of an assistant
	// turn.
	AddGenerationPrompt bool
	// BOS and EOS are the text of the model's special tokens (bos_token,
	// eos_token).
	BOS, EOS string
}

// Template is a compiled chat template, safe for concurrent use.
type Template struct {
	source string
	tmpl   *exec.Template
}

// config is Hugging Face's: trim_blocks and lstrip_blocks on.
func hfConfig() *config.Config {
	c := config.New()
	c.TrimBlocks = true
	c.LeftStripBlocks = true
	return c
}

var environment = &exec.Environment{
	Context:           exec.EmptyContext().Update(builtins.GlobalFunctions).Update(builtins.GlobalVariables),
	Filters:           builtins.Filters,
	Tests:             builtins.Tests,
	ControlStructures: builtins.ControlStructures,
	Methods:           methods(),
}

func init() {
	// gonja logs through logrus when enabled; keep it quiet.
	gonja.SetLoggerOutput(io.Discard)
}

// Compile parses a Jinja chat template.
func Compile(source string) (*Template, error) {
	sum := sha256.Sum256([]byte(source))
	id := "chat-" + hex.EncodeToString(sum[:8])
	base, err := loaders.NewFileSystemLoader("")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTemplate, err)
	}
	loader, err := loaders.NewShiftedLoader(id, strings.NewReader(source), base)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTemplate, err)
	}
	t, err := exec.NewTemplate(id, hfConfig(), loader, environment)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrTemplate, shorten(err.Error()))
	}
	return &Template{source: source, tmpl: t}, nil
}

// Fallback is the compiled FallbackSource.
func Fallback() *Template {
	t, err := Compile(FallbackSource)
	if err != nil {
		panic(err) // a constant that compiles in the tests
	}
	return t
}

// ForModel compiles source, or returns Fallback when source is empty.
func ForModel(source string) (*Template, error) {
	if strings.TrimSpace(source) == "" {
		return Fallback(), nil
	}
	return Compile(source)
}

// Source is the template's Jinja text.
func (t *Template) Source() string { return t.source }

// IsFallback reports whether t is the fallback template.
func (t *Template) IsFallback() bool { return t.source == FallbackSource }

// Render renders msgs into a prompt.
func (t *Template) Render(msgs []Message, opts Options) (out string, err error) {
	defer func() {
		// gonja panics on some expressions (e.g. Python's '%s' % x); a
		// model's template must not take the caller down.
		if r := recover(); r != nil {
			out, err = "", fmt.Errorf("%w: the template engine failed: %v", ErrTemplate, r)
		}
	}()
	list := make([]map[string]any, len(msgs))
	for i, m := range msgs {
		list[i] = map[string]any{"role": m.Role, "content": m.Content}
	}
	// raise_exception records its message here: gonja keeps only the text
	// of a function's error.
	var raised *string
	raise := func(_ *exec.Evaluator, params *exec.VarArgs) *exec.Value {
		msg := "the chat template raised an exception"
		if len(params.Args) > 0 {
			msg = params.Args[0].String()
		}
		raised = &msg
		return exec.ValueError(errors.New(msg))
	}
	data := exec.NewContext(map[string]any{
		"raise_exception":       raise,
		"strftime_now":          strftimeNow,
		"messages":              list,
		"add_generation_prompt": opts.AddGenerationPrompt,
		"bos_token":             opts.BOS,
		"eos_token":             opts.EOS,
		"tools":                 nil, // as transformers passes it without tools
	})
	var buf bytes.Buffer
	if err := t.tmpl.Execute(&buf, data); err != nil {
		if raised != nil {
			return "", fmt.Errorf("%w: %s", ErrRejected, *raised)
		}
		return "", fmt.Errorf("%w: %s", ErrTemplate, shorten(err.Error()))
	}
	return buf.String(), nil
}

// shorten keeps an error message (which gonja fills with the template's
// source) readable.
func shorten(s string) string {
	const max = 300
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
