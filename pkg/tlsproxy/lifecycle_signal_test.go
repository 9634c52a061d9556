package tlsproxy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// TestListenerClosedWhileConnectionsDrain: ListenerClosed is closed as soon
// as Shutdown has closed the listener, while an authenticated connection
// still holds the drain: a proxy taking over the address can bind it then,
// without polling Stats.
func TestListenerClosedWhileConnectionsDrain(t *testing.T) {
	e := newEnv(t)
	p := startProxy(t, tlsproxy.Config{Name: "s", Mode: tlsproxy.ModeServer, Listen: "127.0.0.1:0",
		Target: echoBackend(t), Allow: []string{clientID.String()}, DrainTimeout: time.Minute}, e.server)
	addr := p.Addr().String()
	select {
	case <-p.ListenerClosed():
		t.Fatal("closed while the proxy serves")
	default:
	}
	svids, err := e.client.GetX509SVID()
	require.NoError(t, err)
	c, err := tls.Dial("tcp", addr, e.tlsClientConfig(svids))
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("x"))
	require.NoError(t, err)
	_, err = io.ReadFull(c, make([]byte, 1))
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() { done <- p.Shutdown(context.Background()) }()
	select {
	case <-p.ListenerClosed():
	case <-time.After(30 * time.Second):
		t.Fatal("ListenerClosed not closed after Shutdown began")
	}
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err, "the address is free once ListenerClosed is closed")
	require.NoError(t, ln.Close())
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with a connection open: the signal did not come from a drain", err)
	default:
	}
	require.NoError(t, c.Close())
	require.NoError(t, <-done)
}

// TestListenerClosedNeverStarted: a proxy that never listened closes it at
// Shutdown, so a waiter never hangs on it.
func TestListenerClosedNeverStarted(t *testing.T) {
	e := newEnv(t)
	p, err := tlsproxy.New(tlsproxy.Config{Name: "s", Mode: tlsproxy.ModeServer, Listen: "127.0.0.1:0",
		Target: "127.0.0.1:1", Allow: []string{clientID.String()}}, e.server, e.server)
	require.NoError(t, err)
	ch := p.ListenerClosed()
	require.NoError(t, p.Close())
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("not closed by Close")
	}
}

// TestStatsCollectorMatchesWithRegisterer: the collector over several
// proxies' Stats exports exactly what each proxy's own registration does
// (names, help, labels, values), so a program may use either.
func TestStatsCollectorMatchesWithRegisterer(t *testing.T) {
	e := newEnv(t)
	a := startProxy(t, tlsproxy.Config{Name: "a", Mode: tlsproxy.ModeServer, Listen: "127.0.0.1:0",
		Target: echoBackend(t), Allow: []string{clientID.String()}}, e.server)
	b := startProxy(t, tlsproxy.Config{Name: "b", Mode: tlsproxy.ModeServer, Listen: "127.0.0.1:0",
		Target: echoBackend(t), Allow: []string{otherID.String()}}, e.server)
	svids, err := e.client.GetX509SVID()
	require.NoError(t, err)
	for _, p := range []*proxyUnderTest{a, b} { // one accepted, one refused
		if c, err := tls.Dial("tcp", p.Addr().String(), e.tlsClientConfig(svids)); err == nil {
			_, _ = c.Write([]byte("x"))
			_, _ = io.ReadFull(c, make([]byte, 1))
			_ = c.Close()
		}
	}
	// Quiet before gathering: both sides read the same counters.
	require.Eventually(t, func() bool { return a.Stats().ConnectionsOpen == 0 && b.Stats().ConnectionsOpen == 0 },
		30*time.Second, 10*time.Millisecond)

	joint := prometheus.NewRegistry()
	joint.MustRegister(tlsproxy.NewStatsCollector(func() []tlsproxy.Stats { return []tlsproxy.Stats{a.Stats(), b.Stats()} }))
	require.Equal(t, text(t, a.reg, b.reg), text(t, joint))
}

// text is the exposition of everything gs gather, metric families merged.
func text(t *testing.T, gs ...prometheus.Gatherer) string {
	t.Helper()
	mfs, err := prometheus.Gatherers(gs).Gather()
	require.NoError(t, err)
	var buf bytes.Buffer
	for _, mf := range mfs {
		_, err := expfmt.MetricFamilyToText(&buf, mf)
		require.NoError(t, err)
	}
	return buf.String()
}
