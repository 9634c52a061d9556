package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/identity-agent/identity-agent/internal/unixsock"
)

// Server serves /status and /metrics on a unix socket and, optionally,
// /metrics alone on a loopback TCP address.
type Server struct {
	socket   string
	report   func() Report
	cfg      config
	servers  []*http.Server
	done     chan error
	shutdown bool
}

// Option configures a Server.
type Option func(*config)

type config struct {
	metricsListen string
	gatherer      prometheus.Gatherer
	log           *zap.Logger
}

// WithMetricsListen also serves /metrics (and nothing else) on addr, a
// loopback host:port.
func WithMetricsListen(addr string) Option {
	return func(c *config) { c.metricsListen = addr }
}

// WithGatherer sets what /metrics serves (default: an empty registry).
func WithGatherer(g prometheus.Gatherer) Option {
	return func(c *config) {
		if g != nil {
			c.gatherer = g
		}
	}
}

// WithLogger sets the logger (default zap.NewNop()).
func WithLogger(l *zap.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.log = l
		}
	}
}

// NewServer prepares a server on the unix socket path; report is called
// for every /status request. It listens on nothing until Start.
func NewServer(socket string, report func() Report, opts ...Option) *Server {
	cfg := config{gatherer: prometheus.NewRegistry(), log: zap.NewNop()}
	for _, o := range opts {
		o(&cfg)
	}
	return &Server{socket: socket, report: report, cfg: cfg}
}

// Start listens and returns once serving, in background goroutines, until
// Shutdown or Close. ctx is the base of every request's context.
func (s *Server) Start(ctx context.Context) error {
	if s.servers != nil || s.shutdown {
		return errors.New("admin: already started")
	}
	lis, err := listenUnixPrivate(s.socket)
	if err != nil {
		return err
	}
	metrics := promhttp.HandlerFor(s.cfg.gatherer, promhttp.HandlerOpts{ErrorLog: zap.NewStdLog(s.cfg.log)})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(s.report()); err != nil {
			s.cfg.log.Warn("admin: write status", zap.Error(err))
		}
	})
	mux.Handle("GET /metrics", metrics)
	listeners := []*capListener{newCapListener(lis, "socket", MaxSocketConns, s.cfg.log)}
	handlers := []http.Handler{mux}
	if s.cfg.metricsListen != "" {
		var lc net.ListenConfig
		tcp, err := lc.Listen(ctx, "tcp", s.cfg.metricsListen)
		if err != nil {
			_ = lis.Close()
			return fmt.Errorf("admin: metrics_listen %s: %w", s.cfg.metricsListen, err)
		}
		onlyMetrics := http.NewServeMux()
		onlyMetrics.Handle("GET /metrics", metrics)
		listeners = append(listeners, newCapListener(tcp, "metrics_listen", MaxMetricsConns, s.cfg.log))
		handlers = append(handlers, onlyMetrics)
	}
	s.done = make(chan error, len(listeners))
	for i, l := range listeners {
		srv := &http.Server{Handler: handlers[i], ReadHeaderTimeout: readHeaderTimeout,
			ReadTimeout: readTimeout, WriteTimeout: writeTimeout, IdleTimeout: idleTimeout,
			MaxHeaderBytes: 16 << 10, ConnState: l.connState,
			BaseContext: func(net.Listener) context.Context { return ctx }}
		s.servers = append(s.servers, srv)
		go func() {
			err := srv.Serve(l)
			if errors.Is(err, http.ErrServerClosed) {
				err = nil
			}
			s.done <- err
		}()
	}
	s.cfg.log.Info("admin endpoint listening", zap.String("socket", s.socket), zap.String("metrics_listen", s.cfg.metricsListen),
		zap.Int("max_socket_conns", MaxSocketConns), zap.Int("max_metrics_conns", MaxMetricsConns))
	return nil
}

// Shutdown stops serving, letting requests in flight finish until ctx is
// done, and waits for the serving goroutines; the socket is removed with
// its listener. Safe to call twice, and without Start.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	for _, srv := range s.servers {
		errs = append(errs, srv.Shutdown(ctx))
	}
	for range s.servers {
		errs = append(errs, <-s.done)
	}
	s.servers, s.shutdown = nil, true // closing the listeners removed the socket
	return errors.Join(errs...)
}

// Close is Shutdown without waiting for requests in flight.
func (s *Server) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return s.Shutdown(ctx)
}

// listenUnixPrivate creates the socket's directory and listens with mode
// 0600 (see unixsock.Listen).
func listenUnixPrivate(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("admin: socket directory %s: %w", dir, err)
	}
	lis, err := unixsock.Listen(path, 0o600)
	if errors.Is(err, unixsock.ErrInUse) {
		return nil, fmt.Errorf("admin: %s is in use by another running agent", path)
	}
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	return lis, nil
}
