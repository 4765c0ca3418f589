package server

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus metrics, in a registry of its own.
type metrics struct {
	reg        *prometheus.Registry
	requests   *prometheus.CounterVec   // by endpoint and status code
	inflight   prometheus.Gauge         // HTTP generation requests being served
	finished   *prometheus.CounterVec   // generations by finish reason
	ttft       prometheus.Histogram     // request received -> first token
	itl        prometheus.Histogram     // between two tokens of a sequence
	duration   *prometheus.HistogramVec // whole request, by endpoint
	generated  prometheus.Counter
	prompt     prometheus.Counter
	engineStat func() (EngineStats, bool)
}

func newMetrics(engineStats func() (EngineStats, bool)) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), engineStat: engineStats}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "forgepipe_http_requests_total", Help: "HTTP requests by endpoint and status code.",
	}, []string{"endpoint", "code"})
	m.inflight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "forgepipe_http_generations_in_flight", Help: "Generation requests being served (queued or generating).",
	})
	m.finished = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "forgepipe_generations_total", Help: "Finished generations by finish reason (stop, length, cancelled, error).",
	}, []string{"reason"})
	m.ttft = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "forgepipe_time_to_first_token_seconds", Help: "From the request's arrival to its first generated token.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	})
	m.itl = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "forgepipe_inter_token_latency_seconds", Help: "Between two consecutive tokens of one sequence.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "forgepipe_request_duration_seconds", Help: "Generation requests from arrival to the last byte.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 18),
	}, []string{"endpoint"})
	m.generated = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "forgepipe_generated_tokens_total", Help: "Tokens generated.",
	})
	m.prompt = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "forgepipe_prompt_tokens_total", Help: "Prompt tokens processed.",
	})
	stat := func(f func(EngineStats) float64) func() float64 {
		return func() float64 {
			st, ok := m.engineStat()
			if !ok {
				return 0
			}
			return f(st)
		}
	}
	m.reg.MustRegister(m.requests, m.inflight, m.finished, m.ttft, m.itl, m.duration, m.generated, m.prompt,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "forgepipe_queue_depth", Help: "Requests waiting for a sequence slot.",
		}, stat(func(s EngineStats) float64 { return float64(s.Queued) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "forgepipe_sequences_in_flight", Help: "Sequences generating in the engine.",
		}, stat(func(s EngineStats) float64 { return float64(s.Live) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "forgepipe_kv_cache_bytes", Help: "Memory held by the KV caches.",
		}, stat(func(s EngineStats) float64 { return float64(s.KVBytes) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "forgepipe_uploader_bytes_total", Help: "Weight bytes uploaded to the device.",
		}, stat(func(s EngineStats) float64 { return float64(s.UploadedBytes) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "forgepipe_uploader_hits_total", Help: "Weight requests answered from resident weights.",
		}, stat(func(s EngineStats) float64 { return float64(s.UploadHits) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "forgepipe_uploader_evictions_total", Help: "Weights evicted to stay within the budget.",
		}, stat(func(s EngineStats) float64 { return float64(s.UploadEvictions) })),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

func (m *metrics) request(endpoint string, code int) {
	m.requests.WithLabelValues(endpoint, strconv.Itoa(code)).Inc()
}
