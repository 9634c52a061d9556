package mtls_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/mtls"
	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

var (
	serverID = spiffeid.RequireFromString("spiffe://example.org/server")
	clientID = spiffeid.RequireFromString("spiffe://example.org/client")
	otherID  = spiffeid.RequireFromString("spiffe://example.org/other")
)

type env struct {
	api *svidtest.Server
	src *svid.Source
}

func newEnv(t *testing.T) *env {
	t.Helper()
	api := svidtest.Start(t, svidtest.Config{
		Identities: []svidtest.Identity{{ID: serverID, Hint: "server"}, {ID: clientID, Hint: "client"}, {ID: otherID, Hint: "other"}},
		TTL:        time.Hour, // rotations are explicit
	})
	src := svid.NewSource(svid.WithAddr(api.Addr()))
	require.NoError(t, src.Start(context.Background()))
	t.Cleanup(func() { _ = src.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, src.WaitReady(ctx))
	return &env{api: api, src: src}
}

func (e *env) svids(hint string) x509svid.Source {
	return e.src.X509SVIDSource(svid.Selector{Hint: hint})
}

func allow(t *testing.T, entries ...string) *mtls.AllowList {
	t.Helper()
	a, err := mtls.ParseAllow(entries)
	require.NoError(t, err)
	return a
}

// serve accepts on a ServerConfig listener; each connection that
// handshakes gets one byte (so a TLS 1.3 client reads its session ticket)
// and its handshake error, if any, is sent on errs.
func serve(t *testing.T, cfg *tls.Config) (addr string, errs <-chan error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	ch := make(chan error, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				err := c.(*tls.Conn).Handshake()
				if err == nil {
					_, err = c.Write([]byte{'.'})
				}
				ch <- err
			}()
		}
	}()
	return ln.Addr().String(), ch
}

// dial handshakes with cfg and reads the server's byte.
func dial(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	d := tls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: 10 * time.Second}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		return tls.ConnectionState{}, err
	}
	return c.(*tls.Conn).ConnectionState(), nil
}

func recv(t *testing.T, errs <-chan error) error {
	t.Helper()
	select {
	case err := <-errs:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("the server saw no connection")
		return nil
	}
}

func TestServerAndClientAuthorizeEachOther(t *testing.T) {
	e := newEnv(t)
	addr, errs := serve(t, mtls.ServerConfig(e.svids("server"), e.src, allow(t, clientID.String())))

	cs, err := dial(addr, mtls.ClientConfig(e.svids("client"), e.src, allow(t, serverID.String())))
	require.NoError(t, err)
	require.NoError(t, recv(t, errs))
	id, err := mtls.PeerID(&cs)
	require.NoError(t, err)
	assert.Equal(t, serverID, id)

	// A valid SVID the server's authorizer does not name is refused by the server.
	_, err = dial(addr, mtls.ClientConfig(e.svids("other"), e.src, allow(t, serverID.String())))
	require.Error(t, err)
	assert.ErrorContains(t, recv(t, errs), `mtls: authorize peer spiffe://example.org/other: SPIFFE ID "spiffe://example.org/other" is not allowed`)

	// A client that expects another server refuses this one.
	_, err = dial(addr, mtls.ClientConfig(e.svids("client"), e.src, allow(t, otherID.String())))
	assert.ErrorContains(t, err, `mtls: authorize peer spiffe://example.org/server`)
	_ = recv(t, errs)

	// No authorizer: nobody, rather than everybody.
	_, err = dial(addr, mtls.ClientConfig(e.svids("client"), e.src, nil))
	assert.ErrorContains(t, err, "no authorizer configured: nobody is allowed")
	_ = recv(t, errs)
}

func TestServerRefusesNoCertificateAndForeignCA(t *testing.T) {
	e := newEnv(t)
	addr, errs := serve(t, mtls.ServerConfig(e.svids("server"), e.src, allow(t, "spiffe://example.org")))

	_, err := dial(addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) //nolint:gosec // a peer without a certificate
	require.Error(t, err)
	assert.ErrorContains(t, recv(t, errs), "certificate")

	foreign, err := svidtest.NewCA(spiffeid.RequireTrustDomainFromString("example.org"))
	require.NoError(t, err)
	impostor, err := foreign.IssueX509SVID(clientID, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	require.NoError(t, err)
	_, err = dial(addr, mtls.ClientConfig(impostor, e.src, allow(t, serverID.String())))
	require.Error(t, err)
	assert.ErrorContains(t, recv(t, errs), "mtls: verify peer X.509-SVID")
}

// A switchable authorizer: what a reloaded policy looks like to a config
// built before the reload.
type switchable struct{ deny atomic.Bool }

func (s *switchable) Authorize(id spiffeid.ID, _ [][]*x509.Certificate) error {
	if s.deny.Load() {
		return errors.New("denied now")
	}
	return nil
}
func (s *switchable) String() string { return "switchable" }

// TestResumedSessionIsReauthorized: a client resuming a TLS session after
// the server's authorizer changed its mind is refused. go-spiffe's
// tlsconfig.MTLSServerConfig verifies in VerifyPeerCertificate, which
// crypto/tls skips on resumption, so there the session would go on.
func TestResumedSessionIsReauthorized(t *testing.T) {
	e := newEnv(t)
	authz := &switchable{}
	addr, errs := serve(t, mtls.ServerConfig(e.svids("server"), e.src, authz))
	cc := mtls.ClientConfig(e.svids("client"), e.src, allow(t, serverID.String()))
	cc.ClientSessionCache = tls.NewLRUClientSessionCache(8)

	_, err := dial(addr, cc)
	require.NoError(t, err)
	require.NoError(t, recv(t, errs))
	cs, err := dial(addr, cc)
	require.NoError(t, err)
	require.NoError(t, recv(t, errs))
	require.True(t, cs.DidResume, "the second connection must resume for this test to mean anything")

	authz.deny.Store(true)
	_, err = dial(addr, cc)
	require.Error(t, err)
	assert.ErrorContains(t, recv(t, errs), "denied now")
}

// TestRotationAppliesToNextHandshake: after the Workload API pushes new
// SVIDs the same config presents the new certificate.
func TestRotationAppliesToNextHandshake(t *testing.T) {
	e := newEnv(t)
	addr, errs := serve(t, mtls.ServerConfig(e.svids("server"), e.src, allow(t, clientID.String())))
	cc := mtls.ClientConfig(e.svids("client"), e.src, allow(t, serverID.String()))
	serial := func() string {
		cs, err := dial(addr, cc)
		require.NoError(t, err)
		require.NoError(t, recv(t, errs))
		return cs.PeerCertificates[0].SerialNumber.String()
	}
	before := serial()
	require.NoError(t, e.api.RotateSVIDs())
	require.Eventually(t, func() bool {
		s, err := e.svids("server").GetX509SVID()
		return err == nil && s.Certificates[0].SerialNumber.String() != before
	}, 20*time.Second, 10*time.Millisecond, "the source never saw the rotation")
	assert.NotEqual(t, before, serial())
}

func TestPeerIDErrors(t *testing.T) {
	_, err := mtls.PeerID(nil)
	assert.EqualError(t, err, "mtls: peer ID: not a TLS connection")
	_, err = mtls.PeerID(&tls.ConnectionState{})
	assert.EqualError(t, err, "mtls: peer ID: the peer presented no certificate")
}

func TestListenAndDialErrorsNameTheAddress(t *testing.T) {
	_, err := mtls.Listen("tcp", "127.0.0.1:notaport", nil, nil, nil)
	assert.ErrorContains(t, err, "mtls: listen on tcp 127.0.0.1:notaport")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	_, err = mtls.Dial(context.Background(), "tcp", addr, nil, nil, nil)
	assert.ErrorContains(t, err, "mtls: dial tcp "+addr)
}
