package rotation

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

const (
	waitFor = 20 * time.Second // generous: a loaded 2-core box
	tick    = 20 * time.Millisecond
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// shortDir returns a short temporary directory for unix sockets.
func shortDir(t testing.TB) string {
	t.Helper()
	return svidtest.ShortDir(t, "rot")
}

type env struct {
	srv    *svidtest.Server
	socket string
	src    *svid.Source
}

// newEnv starts a dev Workload API (unless start is false) and a Source on
// its socket.
func newEnv(t testing.TB, cfg svidtest.Config, start bool) *env {
	t.Helper()
	if cfg.TrustDomain.IsZero() {
		cfg.TrustDomain = td
	}
	if cfg.TTL == 0 {
		cfg.TTL = time.Hour // rotations happen when the test says so
	}
	socket := filepath.Join(shortDir(t), "api.sock")
	srv := svidtest.NewUnstarted(t, cfg)
	e := &env{srv: srv, socket: socket}
	if start {
		require.NoError(t, srv.Start(e.socket))
	}
	e.src = svid.NewSource(svid.WithAddr("unix://"+e.socket), svid.WithBackoff(50*time.Millisecond, 300*time.Millisecond))
	require.NoError(t, e.src.Start(context.Background()))
	t.Cleanup(func() { _ = e.src.Close() })
	if start {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		require.NoError(t, e.src.WaitReady(ctx))
	}
	return e
}

// writes collects the write hook's events.
type writes struct {
	mu  sync.Mutex
	evs []writeEvent
	ch  chan writeEvent
}

func newWrites() *writes { return &writes{ch: make(chan writeEvent, 1024)} }

func (w *writes) hook(ev writeEvent) {
	w.mu.Lock()
	w.evs = append(w.evs, ev)
	w.mu.Unlock()
	select {
	case w.ch <- ev:
	default:
	}
}

func (w *writes) count(output string, changedOnly bool) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, ev := range w.evs {
		if ev.Output == output && ev.Err == nil && (ev.Changed || !changedOnly) {
			n++
		}
	}
	return n
}

// runManager starts m and closes it when the test ends.
func runManager(t testing.TB, m *Manager) {
	t.Helper()
	require.NoError(t, m.Start(context.Background()))
	t.Cleanup(func() { require.NoError(t, m.Close()) })
}

func testLogger(t testing.TB) *zap.Logger {
	if tt, ok := t.(*testing.T); ok && testing.Verbose() {
		return zaptest.NewLogger(tt)
	}
	return zap.NewNop()
}

func newTestManager(t testing.TB, e *env, outs []Output, opts ...Option) *Manager {
	t.Helper()
	base := []Option{WithLogger(testLogger(t)), WithRetryBackoff(50*time.Millisecond, 400*time.Millisecond), WithDebounce(20 * time.Millisecond)}
	m, err := NewManager(e.src, outs, append(base, opts...)...)
	require.NoError(t, err)
	return m
}

// opensslSerial reads the serial of the first certificate in path with
// openssl, independently of Go's parser.
func opensslSerial(t testing.TB, path string) *big.Int {
	t.Helper()
	out, err := exec.Command("openssl", "x509", "-noout", "-serial", "-in", path).CombinedOutput()
	require.NoError(t, err, "openssl: %s", out)
	s := strings.TrimSpace(string(out))
	s, ok := strings.CutPrefix(s, "serial=")
	require.True(t, ok, "openssl output %q", out)
	n, ok := new(big.Int).SetString(s, 16)
	require.True(t, ok, "serial %q", s)
	return n
}

func currentSerial(e *env, hint string) *big.Int {
	for _, sv := range e.srv.CurrentSVIDs() {
		if hint == "" || sv.Hint == hint {
			return sv.Certificates[0].SerialNumber
		}
	}
	return nil
}

// fileSerial returns the serial on disk, or nil when the file is not there
// (yet) or not parseable.
func fileSerial(path string) *big.Int {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return nil
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil
	}
	return c.SerialNumber
}

func waitSerial(t testing.TB, path string, want *big.Int) {
	t.Helper()
	require.Eventually(t, func() bool {
		got := fileSerial(path)
		return got != nil && got.Cmp(want) == 0
	}, waitFor, tick, "serial %x never reached %s", want, path)
}

func outputState(m *Manager, name string) OutputState {
	for _, o := range m.Snapshot().Outputs {
		if o.Name == name {
			return o
		}
	}
	return OutputState{}
}

func writeScript(t testing.TB, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755))
	return p
}

func lines(path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	s := strings.TrimSpace(string(data))
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func svidSelector(id, hint string) svid.Selector { return svid.Selector{SpiffeID: id, Hint: hint} }
