package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
)

// syncBuffer is a bytes.Buffer safe for the concurrent writes of the
// server's handlers and the pipeline's actors.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestRequestIDReachesPipelineLogs: the request id of an HTTP request is on
// the pipeline's own log lines for its sequence (start and finish, logged by
// the sampler actor), not only on the server's access log.
func TestRequestIDReachesPipelineLogs(t *testing.T) {
	p := openPipeline(t)
	var logs syncBuffer
	s := New(Config{ModelID: "tiny", Log: zerolog.New(&logs).Level(zerolog.DebugLevel)})
	if err := s.SetEngine(Pipeline(p)); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()

	req, _ := http.NewRequest("POST", ts.URL+"/v1/completions",
		strings.NewReader(`{"prompt": "Pierre said", "max_tokens": 4, "temperature": 0}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-Id", "req-4b1d")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}

	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		msg, _ := line["message"].(string)
		if line["request_id"] == "req-4b1d" && line["seq"] != nil {
			seen[msg] = true
		}
	}
	for _, msg := range []string{"sequence started", "sequence finished"} {
		if !seen[msg] {
			t.Errorf("no %q log line with request_id and seq; lines with the id: %v\n%s", msg, seen, logs.String())
		}
	}
}
