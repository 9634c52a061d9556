package tlsproxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/zap"

	"github.com/identity-agent/identity-agent/pkg/xfcc"
)

// httpFront serves HTTP/1.1 on connections the proxy has already
// handshaken and authorized, and reverse-proxies to the target.
type httpFront struct {
	p         *Proxy
	srv       *http.Server
	ln        *chanListener
	transport *http.Transport
}

type peerKey struct{}

func newHTTPFront(p *Proxy, rt *runtimeConfig) *httpFront {
	f := &httpFront{p: p}
	// Dials and the Host header follow the current target, so Update can
	// move it; pooled upstream connections to an old target are closed by
	// Update.
	f.transport = &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			rt := p.rt.Load()
			c, err := rt.dialer.DialContext(ctx, rt.target.network, rt.target.address)
			if err != nil {
				p.stats.dialFail.Add(1)
				return nil, err
			}
			return c, nil
		},
		MaxIdleConns:        rt.cfg.MaxConns,
		MaxIdleConnsPerHost: rt.cfg.MaxConns,
		IdleConnTimeout:     rt.cfg.IdleTimeout,
		DisableCompression:  true,
	}
	stdLog, _ := zap.NewStdLogAt(p.log, zap.DebugLevel)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			rt := p.rt.Load()
			host := rt.target.address
			if rt.target.network == "unix" {
				host = "localhost"
			}
			pr.SetURL(&url.URL{Scheme: "http", Host: host})
			pr.Out.Host = pr.In.Host
			if rt.cfg.RewriteHost {
				pr.Out.Host = host
			}
			pr.SetXForwarded()
			pr.Out.Header.Set("X-Forwarded-Proto", "https")
			// The verified client identity goes to the target in
			// X-Forwarded-Client-Cert (package xfcc); any copy the client
			// sent, in any spelling, is removed first (by Set, or by Strip
			// when there is no identity to send).
			if hc, ok := pr.In.Context().Value(peerKey{}).(*httpConn); ok {
				xfcc.Set(pr.Out.Header, f.xfcc(hc))
			} else {
				xfcc.Strip(pr.Out.Header)
			}
		},
		Transport: f.transport,
		// A connection the proxy is closing (revoked or at its lifetime
		// while this request was in flight) tells the client so.
		ModifyResponse: func(res *http.Response) error {
			if hc, ok := res.Request.Context().Value(peerKey{}).(*httpConn); ok && hc.t.endingReason() != endNone {
				res.Header.Set("Connection", "close")
			}
			return nil
		},
		// Streamed responses (Ollama tokens, server-sent events) go out as
		// they arrive.
		FlushInterval: -1,
		ErrorLog:      stdLog,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.log.Warn("target request failed", zap.String("peer_addr", r.RemoteAddr), zap.Error(err))
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	// The server's own timeouts are those at New: http.Server cannot
	// change them while serving.
	f.srv = &http.Server{
		Handler:           f.gate(rp),
		ReadHeaderTimeout: rt.cfg.HandshakeTimeout,
		IdleTimeout:       rt.cfg.IdleTimeout,
		ErrorLog:          stdLog,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, peerKey{}, c)
		},
		ConnState: func(c net.Conn, s http.ConnState) {
			if hc, ok := c.(*httpConn); ok {
				hc.t.httpState(hc, s)
			}
		},
	}
	return f
}

// gate refuses requests read after the connection's peer was revoked
// (they never reach the target) and asks the client to close a
// connection that reached MaxConnLifetime after this response.
func (f *httpFront) gate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hc, ok := r.Context().Value(peerKey{}).(*httpConn); ok {
			switch hc.t.endingReason() {
			case endRevoked:
				w.Header().Set("Connection", "close")
				http.Error(w, "peer no longer allowed", http.StatusForbidden)
				return
			case endLifetime:
				w.Header().Set("Connection", "close")
			}
		}
		next.ServeHTTP(w, r)
	})
}

// xfcc is the identity element for a request on hc: the connection's
// client element (its leaf hashed once, at the handshake) with By, the
// proxy's own ID, read now; By is left out if the proxy cannot read its
// own SVID at that moment.
func (f *httpFront) xfcc(hc *httpConn) xfcc.Element {
	e := hc.client
	if s, err := f.p.svids.GetX509SVID(); err == nil {
		e.By = s.ID
	}
	return e
}

func (f *httpFront) start() {
	f.ln = &chanListener{ch: make(chan net.Conn), done: make(chan struct{}), addr: f.p.ln.Addr()}
	f.p.wg.Add(1)
	go func() {
		defer f.p.wg.Done()
		if err := f.srv.Serve(f.ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			f.p.log.Error("http server stopped", zap.Error(err))
		}
	}()
}

// hand gives an authorized connection to the HTTP server.
func (f *httpFront) hand(c *httpConn) {
	select {
	case f.ln.ch <- c:
	case <-f.ln.done:
		_ = c.Close()
	}
}

// shutdown closes idle keep-alive connections and waits for requests in
// flight, until ctx is done.
func (f *httpFront) shutdown(ctx context.Context) {
	_ = f.srv.Shutdown(ctx)
}

func (f *httpFront) close() {
	_ = f.srv.Close()
	f.transport.CloseIdleConnections()
}

// httpConn is an authorized TLS connection owned by the HTTP server. It
// counts payload bytes and releases the proxy's bookkeeping on Close.
type httpConn struct {
	net.Conn // *tls.Conn
	p        *Proxy
	t        *tracked
	peer     spiffeid.ID
	client   xfcc.Element // xfcc.New of the verified leaf and peer, By left zero
	once     sync.Once
}

func (c *httpConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.p.stats.toTarget.Add(uint64(n))
	return n, err
}

func (c *httpConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.p.stats.fromTarget.Add(uint64(n))
	return n, err
}

func (c *httpConn) Close() error {
	var err error
	c.once.Do(func() {
		err = c.Conn.Close()
		c.p.release(c.t)
	})
	return err
}

// chanListener feeds the HTTP server connections accepted, handshaken
// and authorized by the proxy's own accept loop, so limits, timeouts,
// metrics and rejection logging are the same in both modes.
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
	addr net.Addr
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
