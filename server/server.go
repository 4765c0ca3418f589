// Package server is forgepipe's OpenAI-compatible HTTP API:
// POST /v1/completions and /v1/chat/completions (streaming as Server-Sent
// Events), GET /v1/models, GET /health and GET /metrics (Prometheus).
//
// Requests are validated as OpenAI validates them (400 with an OpenAI error
// body); a full engine queue is a 429; a client that goes away cancels its
// sequence. Every request gets an id (its X-Request-Id header, or a new
// UUID) that is logged with it, returned in X-Request-Id and carried in the
// request's context as a zerolog logger (zerolog.Ctx).
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/forgepipe/forgepipe/chat"
)

// Config configures a Server.
type Config struct {
	// ModelID is the model's name in responses and /v1/models.
	ModelID string
	// Log receives the request logs (default: none).
	Log zerolog.Logger
	// MaxBodyBytes caps a request body (default 8 MiB).
	MaxBodyBytes int64
	// ChatTemplate overrides the model's chat template (Jinja source).
	ChatTemplate string
	// QueueTimeout bounds how long a request waits in the engine's queue
	// for a sequence slot before it gets a 429 (0: it waits until a slot
	// frees or the client goes away; the queue itself is bounded).
	QueueTimeout time.Duration
}

// Server is the HTTP API over one Engine. It answers /health with 503 and
// generation requests with 503 until SetEngine is called.
type Server struct {
	cfg     Config
	log     zerolog.Logger
	state   atomic.Pointer[engineState]
	metrics *metrics
	mux     *http.ServeMux
	created int64
}

// engineState is the engine with what the server derives from it once.
type engineState struct {
	engine   Engine
	template *chat.Template
	bos, eos string
	stripBOS bool // the tokenizer adds BOS itself: drop a leading bos_token the template wrote
}

// render renders chat messages with the model's template.
func (st *engineState) render(msgs []chat.Message) (string, error) {
	s, err := st.template.Render(msgs, chat.Options{AddGenerationPrompt: true, BOS: st.bos, EOS: st.eos})
	if err != nil {
		return "", err
	}
	if st.stripBOS && st.bos != "" {
		s = strings.TrimPrefix(s, st.bos)
	}
	return s, nil
}

// New returns a server with no engine yet.
func New(cfg Config) *Server {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 8 << 20
	}
	if cfg.ModelID == "" {
		cfg.ModelID = "forgepipe"
	}
	s := &Server{cfg: cfg, log: cfg.Log, mux: http.NewServeMux(), created: time.Now().Unix()}
	s.metrics = newMetrics(func() (EngineStats, bool) {
		st := s.state.Load()
		if st == nil {
			return EngineStats{}, false
		}
		return st.engine.Stats(), true
	})
	s.route("POST /v1/completions", "completions", s.handleCompletions)
	s.route("POST /v1/chat/completions", "chat_completions", s.handleChat)
	s.route("GET /v1/models", "models", s.handleModels)
	s.route("GET /health", "health", s.handleHealth)
	s.route("GET /metrics", "metrics", s.metrics.handler().ServeHTTP)
	for _, path := range []string{"/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics"} {
		s.route(path, "other", func(w http.ResponseWriter, r *http.Request) {
			writeError(w, &httpError{status: http.StatusMethodNotAllowed, body: errorBody{
				Message: fmt.Sprintf("Method %s is not allowed on %s.", r.Method, r.URL.Path), Type: "invalid_request_error"}})
		})
	}
	s.route("/", "other", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &httpError{status: http.StatusNotFound, body: errorBody{
			Message: fmt.Sprintf("Unknown request URL: %s %s.", r.Method, r.URL.Path), Type: "invalid_request_error"}})
	})
	return s
}

// SetEngine makes the server ready to serve e; it compiles the model's chat
// template (or Config.ChatTemplate, or chat.Fallback when it has none).
func (s *Server) SetEngine(e Engine) error {
	tok := e.Tokenizer()
	src := s.cfg.ChatTemplate
	if src == "" {
		src = tok.Vocab().ChatTemplate
	}
	tmpl, err := chat.ForModel(src)
	if err != nil {
		return err
	}
	st := &engineState{engine: e, template: tmpl, stripBOS: tok.AddBOS()}
	if id := tok.BOS(); id >= 0 {
		st.bos = tok.Piece(id)
	}
	if id := tok.EOS(); id >= 0 {
		st.eos = tok.Piece(id)
	}
	if _, err := st.render([]chat.Message{{Role: "user", Content: "Hello"}}); err != nil {
		// Chat requests will fail with this error; completions still work.
		s.log.Warn().Err(err).Msg("the chat template cannot render a one-message conversation")
	}
	s.log.Info().Bool("fallback_template", tmpl.IsFallback()).Int("ctx", e.ContextSize()).Msg("engine ready")
	s.state.Store(st)
	return nil
}

// Ready reports whether the server has an engine.
func (s *Server) Ready() bool { return s.state.Load() != nil }

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.mux }

// route registers h under pattern with request logging and metrics.
func (s *Server) route(pattern, endpoint string, h http.HandlerFunc) {
	s.mux.Handle(pattern, s.logged(endpoint, h))
}

// ctxKey keys the request id in a context.
type ctxKey struct{}

// RequestID returns the request id carried by ctx ("" if none).
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(ctxKey{}).(string)
	return id
}

// logged wraps h: request id, logger in the context, a log line and the
// request counter at the end.
func (s *Server) logged(endpoint string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if id == "" || len(id) > 128 || strings.ContainsAny(id, "\r\n") {
			id = uuid.NewString()
		}
		w.Header().Set("X-Request-Id", id)
		log := s.log.With().Str("request_id", id).Logger()
		ctx := context.WithValue(log.WithContext(r.Context()), ctxKey{}, id)
		rec := &recorder{ResponseWriter: w, status: http.StatusOK}
		h(rec, r.WithContext(ctx))
		s.metrics.request(endpoint, rec.status)
		level := zerolog.InfoLevel
		if endpoint == "metrics" || endpoint == "health" {
			level = zerolog.DebugLevel
		}
		log.WithLevel(level).Str("method", r.Method).Str("path", r.URL.Path).Int("status", rec.status).
			Int64("bytes", rec.bytes).Str("remote", r.RemoteAddr).Dur("duration_ms", time.Since(start)).Msg("request")
	})
}

// recorder notes the status and size of a response.
type recorder struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wroteHeader = true
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection (Flush).
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// writeJSON writes v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *httpError) {
	writeJSON(w, e.status, apiError{Error: e.body})
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if !s.Ready() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "loading"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, modelList{Object: "list", Data: []modelInfo{{
		ID: s.cfg.ModelID, Object: "model", Created: s.created, OwnedBy: "forgepipe"}}})
}

// engine returns the engine state, or writes a 503.
func (s *Server) engine(w http.ResponseWriter) *engineState {
	st := s.state.Load()
	if st == nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, &httpError{status: http.StatusServiceUnavailable, body: errorBody{
			Message: "The model is still loading.", Type: "server_error", Code: strPtr("model_loading")}})
	}
	return st
}

func (s *Server) handleCompletions(w http.ResponseWriter, r *http.Request) {
	st := s.engine(w)
	if st == nil {
		return
	}
	var req completionRequest
	if e := decode(w, r, s.cfg.MaxBodyBytes, &req); e != nil {
		writeError(w, e)
		return
	}
	j, e := completionJob(&req, st)
	if e != nil {
		writeError(w, e)
		return
	}
	s.generate(w, r, st, j, "completions")
}

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	st := s.engine(w)
	if st == nil {
		return
	}
	var req chatRequest
	if e := decode(w, r, s.cfg.MaxBodyBytes, &req); e != nil {
		writeError(w, e)
		return
	}
	j, e := chatJob(&req, st)
	if e != nil {
		writeError(w, e)
		return
	}
	s.generate(w, r, st, j, "chat_completions")
}

// errShuttingDown is the cause of the requests cancelled at the end of the
// grace period.
var errShuttingDown = errors.New("server shutting down")

// Serve serves on ln until ctx is done, then shuts down gracefully: it stops
// accepting, lets in-flight requests finish for up to grace, then cancels
// the ones still running (their sequences end) and closes the connections.
func (s *Server) Serve(ctx context.Context, ln net.Listener, grace time.Duration) error {
	base, cancelBase := context.WithCancelCause(context.Background())
	defer cancelBase(nil)
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          nil,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.log.Info().Dur("grace_ms", grace).Msg("shutting down: finishing in-flight requests")
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn().Msg("grace period over: cancelling the requests still running")
		cancelBase(errShuttingDown)
		// Handlers see their context cancelled and return; give them a moment
		// to write their last bytes, then close what remains.
		cctx, cancel2 := context.WithTimeout(context.Background(), time.Second)
		defer cancel2()
		if srv.Shutdown(cctx) != nil {
			_ = srv.Close()
		}
		err = nil
	}
	if e := <-errc; e != nil && !errors.Is(e, http.ErrServerClosed) {
		return e
	}
	return err
}
