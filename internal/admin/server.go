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

// Shutdown stops serving and removes the socket.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	for _, srv := range s.servers {
		errs = append(errs, srv.Shutdown(ctx))
	}
	for range s.servers {
		errs = append(errs, <-s.done)
	}
	s.servers = nil
	if err := os.Remove(s.socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// listenUnixPrivate binds under a temporary name, restricts it to 0600 and
// only then renames it into place, so the socket is never reachable with
// wider permissions, whatever the process umask.
func listenUnixPrivate(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("admin: socket directory %s: %w", dir, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("admin: %s exists and is not a socket; refusing to replace it", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("admin: %s is in use by another running agent", path)
		}
	}
	tmp := filepath.Join(dir, fmt.Sprintf(".%s.%d.tmp", filepath.Base(path), os.Getpid()))
	_ = os.Remove(tmp)
	lis, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("admin: listen on %s: %w", path, err)
	}
	ul := lis.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		_ = lis.Close()
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("admin: chmod %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = lis.Close()
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("admin: rename socket into %s: %w", path, err)
	}
	return lis, nil
}
