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
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/identity-agent/identity-agent/internal/unixsock"
)

// Server serves /status and /metrics on a unix socket and, optionally,
// /metrics alone on a loopback TCP address.
type Server struct {
	socket        string
	metricsListen string
	report        func() Report
	gatherer      prometheus.Gatherer
	log           *zap.Logger

	servers []*http.Server
	done    chan error
}

// NewServer prepares a server; report is called for every /status request.
func NewServer(socket, metricsListen string, report func() Report, gatherer prometheus.Gatherer, log *zap.Logger) *Server {
	if log == nil {
		log = zap.NewNop()
	}
	return &Server{socket: socket, metricsListen: metricsListen, report: report, gatherer: gatherer, log: log}
}

// Start listens and serves in background goroutines until Shutdown.
func (s *Server) Start() error {
	lis, err := listenUnixPrivate(s.socket)
	if err != nil {
		return err
	}
	metrics := promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{ErrorLog: zap.NewStdLog(s.log)})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(s.report()); err != nil {
			s.log.Warn("admin: write status", zap.Error(err))
		}
	})
	mux.Handle("GET /metrics", metrics)
	listeners := []net.Listener{lis}
	handlers := []http.Handler{mux}
	if s.metricsListen != "" {
		tcp, err := net.Listen("tcp", s.metricsListen)
		if err != nil {
			_ = lis.Close()
			return fmt.Errorf("admin: metrics_listen %s: %w", s.metricsListen, err)
		}
		onlyMetrics := http.NewServeMux()
		onlyMetrics.Handle("GET /metrics", metrics)
		listeners = append(listeners, tcp)
		handlers = append(handlers, onlyMetrics)
	}
	s.done = make(chan error, len(listeners))
	for i, l := range listeners {
		srv := &http.Server{Handler: handlers[i], ReadHeaderTimeout: 5 * time.Second}
		s.servers = append(s.servers, srv)
		go func() {
			err := srv.Serve(l)
			if errors.Is(err, http.ErrServerClosed) {
				err = nil
			}
			s.done <- err
		}()
	}
	s.log.Info("admin endpoint listening", zap.String("socket", s.socket), zap.String("metrics_listen", s.metricsListen))
	return nil
}

// Shutdown stops serving; the socket is removed with its listener.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	for _, srv := range s.servers {
		errs = append(errs, srv.Shutdown(ctx))
	}
	for range s.servers {
		errs = append(errs, <-s.done)
	}
	s.servers = nil // closing the listeners removed the socket
	return errors.Join(errs...)
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
