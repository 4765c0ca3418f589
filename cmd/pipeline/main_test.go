package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/forgepipe/forgepipe/internal/testutil"
)

// binary is the pipeline executable built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pipeline-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "pipeline")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building pipeline: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is one run of the binary.
type result struct {
	stdout, stderr string
	code           int
}

// pipeline runs the binary with args (in the package directory, so the
// bundled model is found by walking up to the repository).
func pipeline(t *testing.T, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		res.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("pipeline %v: %v", args, err)
	}
	if strings.Contains(res.stderr, "panic") || strings.Contains(res.stderr, "goroutine ") {
		t.Fatalf("pipeline %v panicked:\n%s", args, res.stderr)
	}
	return res
}

// mustPipeline runs the binary and fails the test unless it exits 0.
func mustPipeline(t *testing.T, args ...string) result {
	t.Helper()
	res := pipeline(t, args...)
	if res.code != 0 {
		t.Fatalf("pipeline %v: exit %d\n%s", args, res.code, res.stderr)
	}
	return res
}

func decodeJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("decoding %q: %v", s, err)
	}
}

// inspected is the part of inspect --json the tests read.
type inspected struct {
	Version  uint32 `json:"version"`
	Metadata []struct {
		Key   string          `json:"key"`
		Type  string          `json:"type"`
		Elem  string          `json:"elem"`
		Len   int             `json:"len"`
		Value json.RawMessage `json:"value"`
	} `json:"metadata"`
	Tensors []struct {
		Name  string   `json:"name"`
		Type  string   `json:"type"`
		Shape []uint64 `json:"shape"`
		Bytes uint64   `json:"bytes"`
	} `json:"tensors"`
	Totals []struct {
		Type    string `json:"type"`
		Tensors int    `json:"tensors"`
	} `json:"totals"`
}

func inspect(t *testing.T, path string) inspected {
	t.Helper()
	var rep inspected
	decodeJSON(t, mustPipeline(t, "inspect", "--model", path, "--json").stdout, &rep)
	return rep
}

// meta returns a metadata value as JSON text.
func (r *inspected) meta(key string) string {
	for _, kv := range r.Metadata {
		if kv.Key == key {
			return string(kv.Value)
		}
	}
	return ""
}

// tensorTypes maps tensor names to their type names.
func (r *inspected) tensorTypes() map[string]string {
	m := map[string]string{}
	for _, t := range r.Tensors {
		m[t.Name] = t.Type
	}
	return m
}

// llamaShapes lists the tensors of a llama model in ggml shape order.
func llamaShapes(dim, kvDim, ffn, vocab, layers int, qwen2 bool) map[string][]uint64 {
	u := func(x ...int) []uint64 {
		out := make([]uint64, len(x))
		for i, v := range x {
			out[i] = uint64(v)
		}
		return out
	}
	m := map[string][]uint64{
		"token_embd.weight":  u(dim, vocab),
		"output_norm.weight": u(dim),
		"output.weight":      u(dim, vocab),
	}
	for i := 0; i < layers; i++ {
		p := fmt.Sprintf("blk.%d.", i)
		m[p+"attn_norm.weight"] = u(dim)
		m[p+"attn_q.weight"] = u(dim, dim)
		m[p+"attn_k.weight"] = u(dim, kvDim)
		m[p+"attn_v.weight"] = u(dim, kvDim)
		m[p+"attn_output.weight"] = u(dim, dim)
		m[p+"ffn_norm.weight"] = u(dim)
		m[p+"ffn_gate.weight"] = u(dim, ffn)
		m[p+"ffn_up.weight"] = u(dim, ffn)
		m[p+"ffn_down.weight"] = u(ffn, dim)
		if qwen2 {
			m[p+"attn_q.bias"] = u(dim)
			m[p+"attn_k.bias"] = u(kvDim)
			m[p+"attn_v.bias"] = u(kvDim)
		}
	}
	return m
}

func checkShapes(t *testing.T, rep inspected, want map[string][]uint64) {
	t.Helper()
	if len(rep.Tensors) != len(want) {
		t.Errorf("%d tensors, want %d", len(rep.Tensors), len(want))
	}
	for _, ti := range rep.Tensors {
		if w, ok := want[ti.Name]; !ok || !slices.Equal(ti.Shape, w) {
			t.Errorf("%s: shape %v, want %v", ti.Name, ti.Shape, w)
		}
	}
}

func TestInspectBundledModel(t *testing.T) {
	t.Parallel()
	path := testutil.BundledModel(t)
	// The bundled model: dim 256, 6 layers, 4 KV heads of 32, FFN 704, 4096 tokens.
	want := llamaShapes(256, 128, 704, 4096, 6, false)

	rep := inspect(t, path)
	if rep.Version != 3 {
		t.Errorf("version %d, want 3", rep.Version)
	}
	checkShapes(t, rep, want)
	for _, ti := range rep.Tensors {
		wantType := "F16"
		if len(ti.Shape) == 1 {
			wantType = "F32"
		}
		if ti.Type != wantType {
			t.Errorf("%s: type %s, want %s", ti.Name, ti.Type, wantType)
		}
	}
	if got := rep.meta("llama.block_count"); got != "6" {
		t.Errorf("llama.block_count = %s, want 6", got)
	}
	for _, kv := range rep.Metadata {
		if kv.Key != "tokenizer.ggml.tokens" {
			continue
		}
		var head []string
		if err := json.Unmarshal(kv.Value, &head); err != nil || kv.Elem != "string" || kv.Len != 4096 ||
			len(head) == 0 || len(head) > 10 || head[0] != "<|bos|>" || head[1] != "<|eos|>" {
			t.Errorf("tokenizer.ggml.tokens summarised as %s[%d] %s", kv.Elem, kv.Len, kv.Value)
		}
	}

	// The text form: a table row per tensor and totals per type.
	text := mustPipeline(t, "inspect", "--model", path).stdout
	for _, line := range []string{"tensors (57)", "gguf version  3"} {
		if !strings.Contains(text, line) {
			t.Errorf("text output lacks %q", line)
		}
	}
	rows := 0
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || want[f[0]] == nil {
			continue
		}
		rows++
		if shape := strings.ReplaceAll(fmt.Sprint(want[f[0]]), " ", ", "); !strings.Contains(line, shape) {
			t.Errorf("text row %q lacks shape %s", line, shape)
		}
	}
	if rows != 57 {
		t.Errorf("%d tensor rows in the text output, want 57", rows)
	}
	if !hasRow(text, "F16", "44") || !hasRow(text, "F32", "13") {
		t.Errorf("totals per type missing:\n%s", text)
	}
}

// hasRow reports whether a line of text starts with the given fields.
func hasRow(text string, fields ...string) bool {
	for _, line := range strings.Split(text, "\n") {
		if f := strings.Fields(line); len(f) >= len(fields) && slices.Equal(f[:len(fields)], fields) {
			return true
		}
	}
	return false
}

func TestInspectVocabOnly(t *testing.T) {
	t.Parallel()
	path := filepath.Join(testutil.SharedDir(t), "vocab", "ggml-vocab-llama-spm.gguf")
	rep := inspect(t, path)
	if len(rep.Tensors) != 0 {
		t.Errorf("%d tensors in a vocabulary-only file", len(rep.Tensors))
	}
	if got := rep.meta("tokenizer.ggml.model"); got != `"llama"` {
		t.Errorf("tokenizer.ggml.model = %s, want \"llama\"", got)
	}
	text := mustPipeline(t, "inspect", "--model", path).stdout
	if !strings.Contains(text, "tensors (0)") || !strings.Contains(text, "[string; 32000]") {
		t.Errorf("text output of a vocabulary-only file:\n%s", text)
	}
}

// vocabCases reads llama.cpp's test vectors NAME.gguf.inp/.out.
func vocabCases(t *testing.T, dir, name string) (inputs []string, ids [][]int32) {
	t.Helper()
	inp, err := os.ReadFile(filepath.Join(dir, name+".inp"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.ReadFile(filepath.Join(dir, name+".out"))
	if err != nil {
		t.Fatal(err)
	}
	inputs = strings.Split(string(inp), "\n__ggml_vocab_test__\n")
	inputs = inputs[:len(inputs)-1] // the text after the last marker is not a case
	lines := strings.Split(string(out), "\n")
	if len(lines) < len(inputs) {
		t.Fatalf("%s: %d inputs but %d output lines", name, len(inputs), len(lines))
	}
	for _, line := range lines[:len(inputs)] {
		row := []int32{}
		for _, f := range strings.Fields(line) {
			v, err := strconv.Atoi(f)
			if err != nil {
				t.Fatalf("%s.out: %v", name, err)
			}
			row = append(row, int32(v))
		}
		ids = append(ids, row)
	}
	return inputs, ids
}

func TestTokenizeVectors(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(testutil.SharedDir(t), "vocab")
	// A few cases of each vector file: plain words, leading spaces,
	// whitespace runs, non-Latin text, digits, emoji.
	cases := []int{0, 5, 12, 18, 20, 38}
	for _, name := range []string{"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf"} {
		inputs, want := vocabCases(t, dir, name)
		for _, i := range cases {
			res := mustPipeline(t, "tokenize", "--model", filepath.Join(dir, name), "--no-special", "--json", "--text", inputs[i])
			var got struct {
				IDs []int32 `json:"ids"`
			}
			decodeJSON(t, res.stdout, &got)
			if !slices.Equal(got.IDs, want[i]) {
				t.Errorf("%s case %d %q: ids %v, want %v", name, i, inputs[i], got.IDs, want[i])
			}
		}
	}
}

func TestTokenizeSpecial(t *testing.T) {
	t.Parallel()
	path := testutil.BundledModel(t)
	// BOS is <|bos|> = 0 and EOS <|eos|> = 1; the model adds BOS only.
	def := strings.Fields(mustPipeline(t, "tokenize", "--model", path, "--text", "Hello<|eos|>").stdout)
	if len(def) < 3 || def[0] != "0" || def[len(def)-1] != "1" {
		t.Errorf("default: %v, want BOS 0 first and the parsed <|eos|> (1) last", def)
	}
	plain := strings.Fields(mustPipeline(t, "tokenize", "--model", path, "--no-special", "--text", "Hello<|eos|>").stdout)
	if slices.Contains(plain, "0") || slices.Contains(plain, "1") || !slices.Equal(plain[:len(def)-2], def[1:len(def)-1]) {
		t.Errorf("--no-special: %v, want no BOS, <|eos|> as text, same start as %v", plain, def)
	}
}

// runOut is what run --json prints.
type runOut struct {
	PromptTokens []int32 `json:"prompt_tokens"`
	Tokens       []int32 `json:"tokens"`
	Text         string  `json:"text"`
	StopReason   string  `json:"stop_reason"`
	Timings      struct {
		LoadMs       float64 `json:"load_ms"`
		TTFTMs       float64 `json:"ttft_ms"`
		FirstTokenMs float64 `json:"first_token_ms"`
		PromptTokS   float64 `json:"prompt_tok_s"`
		DecodeTokS   float64 `json:"decode_tok_s"`
	} `json:"timings"`
}

func greedy(t *testing.T, model, prompt string, n int) runOut {
	t.Helper()
	var out runOut
	res := mustPipeline(t, "run", "--model", model, "--prompt", prompt, "--temperature", "0", "--json", "--max-tokens", strconv.Itoa(n))
	decodeJSON(t, res.stdout, &out)
	return out
}

func TestRunGolden(t *testing.T) {
	t.Parallel()
	g := testutil.Golden(t)
	model := testutil.BundledModel(t)
	for _, p := range g[:2] {
		out := greedy(t, model, p.Prompt, 8)
		if !slices.Equal(out.PromptTokens, p.PromptIDs) {
			t.Errorf("%q: prompt tokens %v, want %v", p.Prompt, out.PromptTokens, p.PromptIDs)
		}
		if !slices.Equal(out.Tokens, p.GeneratedIDs[:8]) {
			t.Errorf("%q: tokens %v, want %v", p.Prompt, out.Tokens, p.GeneratedIDs[:8])
		}
		if out.StopReason != "max_tokens" || !strings.HasPrefix(p.Text, out.Text) || out.Text == "" {
			t.Errorf("%q: stop %q, text %q: want max_tokens and a prefix of %q", p.Prompt, out.StopReason, out.Text, p.Text)
		}
		if out.Timings.LoadMs <= 0 || out.Timings.PromptTokS <= 0 || out.Timings.DecodeTokS <= 0 {
			t.Errorf("%q: timings %+v, want all > 0", p.Prompt, out.Timings)
		}
	}

	// Streaming prints the same text (and a final newline) on stdout.
	p := g[0]
	res := mustPipeline(t, "run", "--model", model, "--prompt", p.Prompt, "--temperature", "0", "--max-tokens", "8")
	want, _ := strings.CutSuffix(res.stdout, "\n")
	if want == "" || !strings.HasPrefix(p.Text, want) {
		t.Errorf("streamed %q, want a prefix of %q", res.stdout, p.Text)
	}
}

// TestRunTraceColdStart: run --cold --trace writes a Chrome trace holding
// the start-up tracks (the device's start, the disk's read-ahead of every
// weight, the prompt to the first token) next to the uploads, and --json
// reports first_token_ms, counted from the command's start, past the
// load and the time to first token; --read-ahead off still runs, with no
// read-ahead spans, to the same tokens. (The read-ahead's spans are reads
// or chunks found in the page cache, where --cold could not drop them:
// together they cover the file.)
func TestRunTraceColdStart(t *testing.T) {
	t.Parallel()
	model := testutil.BundledModel(t)
	g := testutil.Golden(t)[0]
	var size int64
	if fi, err := os.Stat(model); err == nil {
		size = fi.Size()
	}
	for _, ra := range []string{"auto", "off"} {
		path := filepath.Join(t.TempDir(), "trace.json")
		res := mustPipeline(t, "run", "--model", model, "--prompt", g.Prompt, "--temperature", "0", "--max-tokens", "4",
			"--json", "--cold", "--read-ahead", ra, "--trace", path)
		var out runOut
		decodeJSON(t, res.stdout, &out)
		if !slices.Equal(out.Tokens, g.GeneratedIDs[:4]) {
			t.Errorf("read-ahead %s: tokens %v, want %v", ra, out.Tokens, g.GeneratedIDs[:4])
		}
		if tm := out.Timings; tm.FirstTokenMs <= 0 || tm.FirstTokenMs < tm.TTFTMs || tm.FirstTokenMs < tm.LoadMs {
			t.Errorf("read-ahead %s: timings %+v: want first_token_ms > 0, past ttft_ms and load_ms", ra, tm)
		}
		events, threads := readTrace(t, path)
		spans := map[string]int{}
		var readBytes int64
		for _, e := range events {
			if e.Ph != "X" {
				continue
			}
			th := threads[[2]int{*e.Pid, *e.Tid}]
			spans[th+"/"+e.Name]++
			if th == "disk read-ahead" {
				b, _ := e.Args["bytes"].(float64)
				readBytes += int64(b)
			}
		}
		for _, want := range []string{"run/open", "run/prompt to first token", "open/open device and runtime"} {
			if spans[want] != 1 {
				t.Errorf("read-ahead %s: %d spans %q, want 1 (spans: %v)", ra, spans[want], want, spans)
			}
		}
		switch {
		case ra == "auto" && (readBytes <= size/2 || readBytes > size):
			t.Errorf("read ahead %d bytes of a %d-byte file: want nearly all of it, once", readBytes, size)
		case ra == "off" && readBytes != 0:
			t.Errorf("--read-ahead off read %d bytes ahead", readBytes)
		}
	}
}

func TestBadFlags(t *testing.T) {
	t.Parallel()
	model := testutil.BundledModel(t)
	missing := filepath.Join(t.TempDir(), "missing.gguf")
	tests := []struct {
		name string
		args []string
		want string // in the error line
	}{
		{"negative temperature", []string{"run", "--model", model, "--prompt", "x", "--temperature", "-1"}, "--temperature"},
		{"NaN temperature", []string{"run", "--model", model, "--prompt", "x", "--temperature", "NaN"}, "--temperature"},
		{"top-p zero", []string{"run", "--model", model, "--prompt", "x", "--top-p", "0"}, "--top-p"},
		{"top-p above one", []string{"run", "--model", model, "--prompt", "x", "--top-p", "1.01"}, "--top-p"},
		{"zero max tokens", []string{"run", "--model", model, "--prompt", "x", "--max-tokens", "0"}, "--max-tokens"},
		{"negative max tokens", []string{"run", "--model", model, "--prompt", "x", "--max-tokens", "-5"}, "--max-tokens"},
		{"non-numeric max tokens", []string{"run", "--model", model, "--prompt", "x", "--max-tokens", "many"}, "max-tokens"},
		{"missing model file", []string{"run", "--model", missing, "--prompt", "x"}, "no such file"},
		{"no model flag", []string{"run", "--prompt", "x"}, `"model"`},
		{"empty prompt", []string{"run", "--model", model, "--prompt", ""}, "--prompt"},
		{"not a GGUF", []string{"inspect", "--model", "main.go"}, "GGUF"},
		{"inspect missing file", []string{"inspect", "--model", missing}, "no such file"},
		{"tokenize missing file", []string{"tokenize", "--model", missing, "--text", "x"}, "no such file"},
		{"unknown quant type", []string{"quantize", "--in", model, "--out", missing, "--type", "q9_9"}, "q9_9"},
		{"quant type that is no file type", []string{"quantize", "--in", model, "--out", missing, "--type", "q8_k"}, "Q8_K"},
		{"gen-model bad arch", []string{"gen-model", "--out", missing, "--arch", "gpt2"}, "gpt2"},
		{"gen-model bad shape", []string{"gen-model", "--out", missing, "--dim", "100"}, "dim 100"},
		{"gen-model bad preset", []string{"gen-model", "--out", missing, "--preset", "70b"}, "70b"},
		{"bad log level", []string{"inspect", "--model", model, "--log-level", "loud"}, "--log-level"},
		{"bad read-ahead", []string{"run", "--model", model, "--prompt", "x", "--read-ahead", "lots"}, "--read-ahead"},
		{"trace with eager", []string{"run", "--model", model, "--prompt", "x", "--eager", "--trace", missing}, "--trace"},
		{"unknown command", []string{"serve-everything"}, "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := pipeline(t, tt.args...)
			lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
			if res.code != 1 || len(lines) != 1 || !strings.Contains(lines[0], tt.want) || !strings.Contains(lines[0], "error") {
				t.Errorf("exit %d, stderr %q: want exit 1 and one error line naming %q", res.code, res.stderr, tt.want)
			}
			if res.stdout != "" {
				t.Errorf("stdout %q, want nothing", res.stdout)
			}
		})
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("a failed command wrote its output file")
	}
}

func fileSHA(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestGenModel(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// stories260K's 512-token SentencePiece vocabulary keeps the files small.
	vocab := testutil.Testdata(t, "stories260K.gguf")
	tests := []struct {
		arch, typ, wantType string
	}{
		{"llama", "f16", "F16"},
		{"llama", "q8_0", "Q8_0"},
		{"llama", "q4_k", "Q4_K"},
		{"qwen2", "bf16", "BF16"},
		{"qwen2", "q6_k", "Q6_K"},
		{"qwen2", "q4_0", "Q4_0"},
	}
	for _, tt := range tests {
		t.Run(tt.arch+"-"+tt.typ, func(t *testing.T) {
			path := filepath.Join(dir, tt.arch+"-"+tt.typ+".gguf")
			gen := func(out, seed string) {
				mustPipeline(t, "gen-model", "--out", out, "--arch", tt.arch, "--preset", "tiny", "--type", tt.typ,
					"--seed", seed, "--vocab-from", vocab)
			}
			gen(path, "7")
			rep := inspect(t, path)
			// tiny: dim 256, 2 layers, 4 KV heads of 32, FFN 512.
			checkShapes(t, rep, llamaShapes(256, 128, 512, 512, 2, tt.arch == "qwen2"))
			for _, ti := range rep.Tensors {
				want := tt.wantType
				if len(ti.Shape) == 1 {
					want = "F32"
				}
				if ti.Type != want {
					t.Errorf("%s: type %s, want %s", ti.Name, ti.Type, want)
				}
			}
			if got := rep.meta("general.architecture"); got != `"`+tt.arch+`"` {
				t.Errorf("general.architecture = %s", got)
			}
			if got := rep.meta("tokenizer.ggml.model"); got != `"llama"` {
				t.Errorf("tokenizer.ggml.model = %s, want stories260K's \"llama\"", got)
			}

			again := filepath.Join(dir, tt.arch+"-"+tt.typ+"-again.gguf")
			gen(again, "7")
			if fileSHA(t, path) != fileSHA(t, again) {
				t.Error("the same seed wrote different files")
			}
			other := filepath.Join(dir, tt.arch+"-"+tt.typ+"-other.gguf")
			gen(other, "8")
			if fileSHA(t, path) == fileSHA(t, other) {
				t.Error("another seed wrote the same file")
			}
		})
	}
}

func TestGenModelOverridesAndRuns(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "custom.gguf")
	mustPipeline(t, "gen-model", "--out", path, "--arch", "qwen2", "--dim", "128", "--layers", "3",
		"--heads", "4", "--kv-heads", "2", "--ffn", "384", "--ctx", "256", "--type", "q8_0", "--name", "custom")
	rep := inspect(t, path)
	checkShapes(t, rep, llamaShapes(128, 64, 384, 4096, 3, true))
	for key, want := range map[string]string{
		"general.name": `"custom"`, "qwen2.context_length": "256", "qwen2.attention.head_count": "4",
		"qwen2.attention.head_count_kv": "2", "qwen2.rope.dimension_count": "32", "general.file_type": "7",
	} {
		if got := rep.meta(key); got != want {
			t.Errorf("%s = %s, want %s", key, got, want)
		}
	}
	if got := rep.meta("tokenizer.ggml.model"); got != `"gpt2"` {
		t.Errorf("tokenizer.ggml.model = %s, want the bundled model's \"gpt2\" (the default)", got)
	}
	// The engine loads it and generates: the weights give finite logits.
	out := greedy(t, path, "Once upon a time", 6)
	if len(out.Tokens) == 0 || out.StopReason == "" {
		t.Errorf("run on a synthetic model: %+v", out)
	}
}

// matchingPrefix is the number of leading tokens a and b share.
func matchingPrefix(a, b []int32) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

func TestQuantizeBundledModel(t *testing.T) {
	t.Parallel()
	g := testutil.Golden(t)
	model := testutil.BundledModel(t)
	dir := t.TempDir()
	for _, tt := range []struct{ typ, want string }{{"q8_0", "Q8_0"}, {"q4_k", "Q4_K"}} {
		out := filepath.Join(dir, tt.typ+".gguf")
		mustPipeline(t, "quantize", "--in", model, "--out", out, "--type", tt.typ)
		rep := inspect(t, out)
		checkShapes(t, rep, llamaShapes(256, 128, 704, 4096, 6, false))
		for _, ti := range rep.Tensors {
			want := tt.want
			switch {
			case len(ti.Shape) == 1:
				want = "F32"
			case tt.typ == "q4_k" && ti.Shape[0] == 704: // 704-wide rows: no 256-blocks
				want = "Q5_0"
			}
			if ti.Type != want {
				t.Errorf("%s %s: type %s, want %s", tt.typ, ti.Name, ti.Type, want)
			}
		}
		// Greedy output stays close to the F16 model's (the golden tokens).
		// Prompts 0 and 2; on prompts 1 and 3 the F16 model's first two
		// logits are within 0.25 of each other, and Q4_K's error flips them.
		for _, i := range []int{0, 2} {
			p := g[i]
			res := greedy(t, out, p.Prompt, 16)
			n := matchingPrefix(res.Tokens, p.GeneratedIDs)
			t.Logf("%s %q: first %d of 16 tokens match the F16 model", tt.typ, p.Prompt, n)
			if n < 2 {
				t.Errorf("%s %q: tokens %v, F16 gives %v: fewer than 2 match", tt.typ, p.Prompt, res.Tokens, p.GeneratedIDs[:16])
			}
		}
	}
}

func TestQuantizeFallback(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "stories.q4_k.gguf")
	res := mustPipeline(t, "quantize", "--in", testutil.Testdata(t, "stories260K.gguf"), "--out", out, "--type", "q4_k")
	rep := inspect(t, out)
	types := rep.tensorTypes()
	for layer := 0; layer < 5; layer++ {
		down := fmt.Sprintf("blk.%d.ffn_down.weight", layer)
		if types[down] != "F16" {
			t.Errorf("%s (172-wide rows): %s, want the F16 fallback", down, types[down])
		}
		if gate := fmt.Sprintf("blk.%d.ffn_gate.weight", layer); types[gate] != "Q5_0" {
			t.Errorf("%s (64-wide rows): %s, want the Q5_0 fallback", gate, types[gate])
		}
		if norm := fmt.Sprintf("blk.%d.ffn_norm.weight", layer); types[norm] != "F32" {
			t.Errorf("%s: %s, want F32", norm, types[norm])
		}
		if !strings.Contains(res.stderr, down) {
			t.Errorf("no warning names %s:\n%s", down, res.stderr)
		}
	}
	if !strings.Contains(res.stderr, "WRN") {
		t.Errorf("no warning logged:\n%s", res.stderr)
	}
}

func TestLogJSON(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "m.gguf")
	res := mustPipeline(t, "gen-model", "--out", path, "--log-json")
	lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
	if len(lines) < 2 {
		t.Fatalf("stderr %q: want JSON log lines", res.stderr)
	}
	for _, line := range lines {
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil || entry["level"] == nil || entry["message"] == nil {
			t.Errorf("log line %q is not a zerolog JSON entry (%v)", line, err)
		}
	}
	// A failure under --log-json is one JSON line too.
	bad := pipeline(t, "inspect", "--model", "main.go", "--log-json")
	var entry map[string]any
	if bad.code != 1 || json.Unmarshal([]byte(strings.TrimSpace(bad.stderr)), &entry) != nil || entry["level"] != "error" {
		t.Errorf("exit %d, stderr %q: want exit 1 and one JSON error line", bad.code, bad.stderr)
	}
}

func TestRunCtrlC(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(binary, "run", "--model", testutil.BundledModel(t), "--prompt", "Prince Andrew",
		"--temperature", "0", "--max-tokens", "480")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Interrupt once the first text has been streamed.
	first := make([]byte, 1)
	if _, err := io.ReadFull(stdout, first); err != nil {
		t.Fatalf("no output before the interrupt: %v", err)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(stdout)
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 130 {
		t.Errorf("exit: %v, want status 130", err)
	}
	if s := stderr.String(); !strings.Contains(s, "stop=cancelled") || strings.Contains(s, "panic") {
		t.Errorf("stderr %q: want a cancelled stop and no panic", s)
	}
	if len(rest) == 0 || rest[len(rest)-1] != '\n' {
		t.Errorf("stdout %q: want the text so far ended by a newline", append(first, rest...))
	}
}
