// Package openai drives forgepipe's server with the official openai npm
// client (client.mjs). It runs under `make openai-test`, which installs the
// package (npm ci) and sets FORGEPIPE_NODE_TEST=1; plain `go test ./...`
// skips it.
package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/forgepipe/forgepipe"
	"github.com/forgepipe/forgepipe/chat"
	"github.com/forgepipe/forgepipe/internal/testutil"
	"github.com/forgepipe/forgepipe/server"
)

// greedy is what `pipeline run --temperature 0` prints for prompt.
func greedy(t *testing.T, bin, prompt string, maxTokens int) string {
	t.Helper()
	out, err := exec.Command(bin, "run", "--model", testutil.BundledModel(t), "--prompt", prompt,
		"--max-tokens", itoa(maxTokens), "--temperature", "0", "--json", "--log-level", "error").Output()
	if err != nil {
		t.Fatalf("pipeline run: %v", err)
	}
	var r struct {
		Text string `json:"text"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("pipeline run output %q: %v", out, err)
	}
	return r.Text
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestOpenAINodeClient(t *testing.T) {
	if os.Getenv("FORGEPIPE_NODE_TEST") == "" {
		t.Skip("run with `make openai-test` (needs node and `npm ci --prefix tests/openai`)")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node not found")
	}
	if _, err := os.Stat(filepath.Join("node_modules", "openai", "package.json")); err != nil {
		t.Fatal("the openai package is not installed: run `npm ci --prefix tests/openai`")
	}
	bin := filepath.Join(t.TempDir(), "pipeline")
	build := exec.Command("go", "build", "-o", bin, "./cmd/pipeline")
	build.Dir = testutil.RepoRoot(t)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building pipeline: %v\n%s", err, out)
	}

	p, err := forgepipe.Open(testutil.BundledModel(t), forgepipe.WithBackend("host"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	srv := server.New(server.Config{ModelID: "forgepipe-tiny", Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
	if err := srv.SetEngine(server.Pipeline(p)); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler()) // a free loopback port
	defer ts.Close()

	// The bundled model has no chat template: the server renders the
	// fallback (ChatML) template, and so does this test.
	messages := []chat.Message{{Role: "system", Content: "You are Tolstoy."}, {Role: "user", Content: "Who is Natasha Rostova?"}}
	rendered, err := chat.Fallback().Render(messages, chat.Options{AddGenerationPrompt: true})
	if err != nil {
		t.Fatal(err)
	}
	const chatTokens, completionTokens = 24, 16
	const prompt = "Prince Andrew looked at"
	type msg struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	expect := map[string]any{
		"chat": map[string]any{
			"messages":   []msg{{messages[0].Role, messages[0].Content}, {messages[1].Role, messages[1].Content}},
			"max_tokens": chatTokens, "text": greedy(t, bin, rendered, chatTokens),
		},
		"completion": map[string]any{
			"prompt": prompt, "max_tokens": completionTokens, "text": greedy(t, bin, prompt, completionTokens),
		},
	}
	ej, _ := json.Marshal(expect)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "client.mjs")
	cmd.Env = append(os.Environ(), "FORGEPIPE_URL="+ts.URL, "FORGEPIPE_EXPECT="+string(ej))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node client.mjs: %v\nstdout: %s\nstderr: %s\nexpected: %s", err, stdout.String(), stderr.String(), ej)
	}
	t.Logf("node: %s", bytes.TrimSpace(stdout.Bytes()))
}
