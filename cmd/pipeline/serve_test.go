package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/forgepipe/forgepipe/internal/testutil"
	"github.com/forgepipe/forgepipe/loadtest"
)

// startServe starts "pipeline serve" on a free loopback port and returns
// its base URL once /health answers 200.
func startServe(t *testing.T, args ...string) (string, *exec.Cmd, *strings.Builder) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"serve", "--log-json", "--model", testutil.BundledModel(t),
		"--addr", "127.0.0.1:0", "--backend", "host"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	logs := &strings.Builder{}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			logs.WriteString(line + "\n")
			var m struct{ Message, Addr string }
			if json.Unmarshal([]byte(line), &m) == nil && m.Message == "listening" {
				addr <- m.Addr
			}
		}
	}()
	var url string
	select {
	case a := <-addr:
		url = "http://" + a
	case <-time.After(30 * time.Second):
		t.Fatalf("serve did not listen:\n%s", logs)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := http.Get(url + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not healthy:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return url, cmd, logs
}

func TestServeAndLoadtest(t *testing.T) {
	url, cmd, logs := startServe(t, "--model-id", "tiny")
	resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(`{"model": "tiny", "prompt": "Prince Andrew", "max_tokens": 5, "temperature": 0}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"model":"tiny"`) {
		t.Fatalf("completion: %d %s", resp.StatusCode, body)
	}

	out := mustPipeline(t, "loadtest", "--url", url, "--concurrency", "4", "--requests", "20", "--max-tokens", "4", "--stream", "--json")
	var rep loadtest.Report
	decodeJSON(t, out.stdout, &rep)
	if rep.Requests != 20 || rep.Succeeded != 20 || rep.TTFT.N != 20 || rep.OutputTokens == 0 {
		t.Errorf("loadtest report %+v", rep)
	}
	out = mustPipeline(t, "loadtest", "--url", url, "--chat", "--concurrency", "2", "--requests", "4", "--max-tokens", "3")
	if !strings.Contains(out.stdout, "4 ok, 0 failed") {
		t.Errorf("loadtest --chat:\n%s", out.stdout)
	}

	// SIGTERM: graceful shutdown, exit 0.
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("serve after SIGTERM: %v\n%s", err, logs)
	}
	for _, want := range []string{`"request_id"`, `"message":"generation"`, `"message":"stopped"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
}

func TestLoadtestInProcess(t *testing.T) {
	out := mustPipeline(t, "loadtest", "--in-process", "--model", testutil.BundledModel(t), "--backend", "host",
		"--concurrency", "4", "--requests", "12", "--max-tokens", "4", "--json")
	var rep loadtest.Report
	decodeJSON(t, out.stdout, &rep)
	if rep.Succeeded != 12 || rep.ITL.N == 0 {
		t.Errorf("report %+v", rep)
	}
}

func TestServeLoadtestBadFlags(t *testing.T) {
	model := testutil.BundledModel(t)
	for _, args := range [][]string{
		{"serve"},
		{"serve", "--model", "/nonexistent.gguf"},
		{"serve", "--model", model, "--max-sequences", "0"},
		{"serve", "--model", model, "--addr", "256.0.0.1:99999"},
		{"loadtest"},
		{"loadtest", "--url", "ftp://x"},
		{"loadtest", "--url", "http://127.0.0.1:1", "--in-process", "--model", model},
		{"loadtest", "--url", "http://127.0.0.1:1", "--concurrency", "0"},
		{"loadtest", "--url", "http://127.0.0.1:1", "--max-tokens", "-1"},
		{"loadtest", "--in-process"},
	} {
		res := pipeline(t, args...)
		if res.code != exitError || !strings.Contains(res.stderr, "error") {
			t.Errorf("%v: exit %d, stderr %q", args, res.code, res.stderr)
		}
	}
	// A server that is not there: a report with errors by kind, exit 1.
	res := pipeline(t, "loadtest", "--url", "http://127.0.0.1:1", "--requests", "3", "--concurrency", "1")
	if res.code != exitError || !strings.Contains(res.stdout, "connect=3") || !strings.Contains(res.stderr, "3 of 3 requests failed") {
		t.Errorf("unreachable server: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
}
