package s3

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's request metrics, in a registry of its own.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	received prometheus.Counter
	sent     prometheus.Counter
}

func newMetrics(reg *prometheus.Registry) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ddstore_s3_requests_total",
			Help: "S3 requests served by the gateway, by operation and HTTP status code.",
		}, []string{"operation", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ddstore_s3_request_duration_seconds",
			Help:    "Time to serve an S3 request, by operation.",
			Buckets: []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"operation"}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ddstore_s3_bytes_received_total",
			Help: "Request body bytes received by the S3 gateway.",
		}),
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ddstore_s3_bytes_sent_total",
			Help: "Response body bytes sent by the S3 gateway.",
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.received, m.sent} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) observe(op string, code int, took time.Duration, in, out int64) {
	if op == "" {
		op = "unknown"
	}
	m.requests.WithLabelValues(op, strconv.Itoa(code)).Inc()
	m.duration.WithLabelValues(op).Observe(took.Seconds())
	m.received.Add(float64(in))
	m.sent.Add(float64(out))
}
