package chat

import (
	"errors"
	"testing"
	"time"
)

// Real chat templates, as their models' tokenizer_config.json ship them.
const (
	qwen2 = `{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}`

	llama3 = `{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}`

	llama2 = `{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}`

	mistralV3 = `{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message["role"] == "user") != (loop.index0 % 2 == 0) %}
        {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant...") }}
    {%- endif %}
    {%- if message["role"] == "user" %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST] " + system_message + "\n\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"]|trim + eos_token}}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}
`

	// zephyr relies on trim_blocks: the newline after each block tag goes.
	zephyr = `{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>
'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}`
)

func TestRealTemplates(t *testing.T) {
	conv := []Message{
		{"system", "Be brief."},
		{"user", " Who is Pierre? "},
		{"assistant", " A count. "},
		{"user", "And Natasha?"},
	}
	noSys := conv[1:]
	cases := []struct {
		name, src string
		msgs      []Message
		opts      Options
		want      string
	}{
		{"qwen2", qwen2, conv, Options{AddGenerationPrompt: true},
			"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Who is Pierre? <|im_end|>\n<|im_start|>assistant\n A count. <|im_end|>\n<|im_start|>user\nAnd Natasha?<|im_end|>\n<|im_start|>assistant\n"},
		{"qwen2 default system", qwen2, noSys[:1], Options{},
			"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n Who is Pierre? <|im_end|>\n"},
		{"llama3", llama3, conv, Options{AddGenerationPrompt: true, BOS: "<|begin_of_text|>"},
			"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWho is Pierre?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA count.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnd Natasha?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{"llama2", llama2, conv, Options{BOS: "<s>", EOS: "</s>"},
			"<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n Who is Pierre? [/INST] A count. </s><s>[INST] And Natasha? [/INST]"},
		{"mistral v0.3", mistralV3, conv, Options{BOS: "<s>", EOS: "</s>"},
			"<s>[INST]  Who is Pierre? [/INST] A count.</s>[INST] Be brief.\n\nAnd Natasha?[/INST]"},
		{"zephyr", zephyr, conv, Options{AddGenerationPrompt: true, EOS: "</s>"},
			"<|system|>\nBe brief.</s>\n<|user|>\n Who is Pierre? </s>\n<|assistant|>\n A count. </s>\n<|user|>\nAnd Natasha?</s>\n<|assistant|>\n"},
		{"fallback", FallbackSource, conv[:2], Options{AddGenerationPrompt: true},
			"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Who is Pierre? <|im_end|>\n<|im_start|>assistant\n"},
		{"fallback no generation prompt", FallbackSource, conv[1:2], Options{},
			"<|im_start|>user\n Who is Pierre? <|im_end|>\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tm, err := Compile(c.src)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tm.Render(c.msgs, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("got\n%q\nwant\n%q", got, c.want)
			}
		})
	}
}

func TestRaiseException(t *testing.T) {
	for _, src := range []string{llama2, mistralV3} {
		tm, err := Compile(src)
		if err != nil {
			t.Fatal(err)
		}
		_, err = tm.Render([]Message{{"user", "a"}, {"user", "b"}}, Options{})
		if !errors.Is(err, ErrRejected) {
			t.Fatalf("got %v, want ErrRejected", err)
		}
		t.Log(err)
	}
	tm, _ := Compile(mistralV3)
	if _, err := tm.Render([]Message{{"tool", "a"}}, Options{}); !errors.Is(err, ErrRejected) {
		t.Fatalf("tool role: got %v, want ErrRejected", err)
	}
}

func TestCompileErrors(t *testing.T) {
	for _, src := range []string{"{% for m in messages %}", "{{ messages[ }}", "{% endif %}"} {
		if _, err := Compile(src); !errors.Is(err, ErrTemplate) {
			t.Errorf("%q: got %v, want ErrTemplate", src, err)
		}
	}
}

func TestForModel(t *testing.T) {
	tm, err := ForModel("  ")
	if err != nil || !tm.IsFallback() {
		t.Fatalf("empty source: got %v, %v; want the fallback", tm, err)
	}
	tm, err = ForModel(qwen2)
	if err != nil || tm.IsFallback() || tm.Source() != qwen2 {
		t.Fatalf("qwen2: got fallback=%v err=%v", tm.IsFallback(), err)
	}
}

func TestConcurrentRender(t *testing.T) {
	tm, err := Compile(llama3)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 8)
	for i := 0; i < 8; i++ {
		go func() {
			s, _ := tm.Render([]Message{{"user", "hi"}}, Options{BOS: "<b>"})
			done <- s
		}()
	}
	for i := 0; i < 8; i++ {
		if s := <-done; s != "<b><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>" {
			t.Errorf("got %q", s)
		}
	}
}

// TestPythonisms covers what real templates use beyond plain Jinja.
func TestPythonisms(t *testing.T) {
	msgs := []Message{{"user", " Who is Pierre? \n"}, {"assistant", "xxA countxx"}}
	for _, c := range []struct{ src, want string }{
		{`{{ messages[0].content.strip() }}|{{ messages[0].content.lstrip() }}|{{ messages[0].content.rstrip() }}`,
			"Who is Pierre?|Who is Pierre? \n| Who is Pierre?"},
		{`{{ messages[1].content.strip('x') }}|{{ messages[1].content.lstrip('x') }}|{{ messages[1].content.rstrip('x') }}`,
			"A count|A countxx|xxA count"},
		{`{{ messages[0].content.startswith(' W') }} {{ messages[1]['content'].split('A')|length }}`, "True 2"},
		{`{%- set ns = namespace(last=-1) %}{%- for m in messages[::-1] %}{%- if ns.last == -1 and m.role == 'user' %}{%- set ns.last = loop.index0 %}{%- endif %}{%- endfor %}{{ ns.last }}`, "1"},
		{`{%- if tools is not none %}tools{% else %}none{% endif %}`, "none"},
		{`{{ messages[0] | tojson }}`, `{"content":" Who is Pierre? \n","role":"user"}`},
		{`{%- if messages|selectattr('role', 'equalto', 'user')|list|length == 1 %}one{% endif %}`, "one"},
		{`{%- macro tag(x) %}<{{ x }}>{% endmacro %}{{ tag(messages[1].role) }}`, "<assistant>"},
	} {
		tm, err := Compile(c.src)
		if err != nil {
			t.Fatalf("%s: %v", c.src, err)
		}
		got, err := tm.Render(msgs, Options{})
		if err != nil || got != c.want {
			t.Errorf("%s: got %q, %v; want %q", c.src, got, err, c.want)
		}
	}
}

func TestStrftimeNow(t *testing.T) {
	// llama 3.1's opening: the date from strftime_now when it is defined.
	tm, err := Compile(`{%- if not date_string is defined %}{%- if strftime_now is defined %}{%- set date_string = strftime_now("%d %b %Y") %}{%- else %}{%- set date_string = "26 Jul 2024" %}{%- endif %}{%- endif %}Today Date: {{ date_string }}`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tm.Render(nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := time.Parse("Today Date: 02 Jan 2006", got); err != nil {
		t.Errorf("got %q: %v", got, err)
	}
	ts := time.Date(2024, 7, 6, 15, 4, 5, 0, time.UTC)
	if got := strftime(ts, "%Y-%m-%d %H:%M:%S %a %A %b %B %j %I%p %y %% %Q"); got != "2024-07-06 15:04:05 Sat Saturday Jul July 188 03PM 24 % %Q" {
		t.Errorf("strftime: %q", got)
	}
}

func TestEnginePanicIsAnError(t *testing.T) {
	// gonja panics on Python's % formatting of strings.
	tm, err := Compile(`{{ '%s!' % messages[0].content }}`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tm.Render([]Message{{"user", "hi"}}, Options{}); !errors.Is(err, ErrTemplate) {
		t.Errorf("got %v, want ErrTemplate", err)
	}
}
