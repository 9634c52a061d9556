package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"
)

// MaxStatusBytes bounds the status document a client reads. A real one is
// a few KiB per output and proxy; whatever answers on the socket path is
// not trusted to stop.
const MaxStatusBytes = 4 << 20

// maxHeaderBytes bounds the response headers the same way.
const maxHeaderBytes = 64 << 10

// Fetch reads /status from the agent at addr, its admin unix socket (a path
// or unix:///path). Whatever serves that path is checked and bounded: the
// kernel must report root, this process's own uid, or the uid whose own
// directory holds the socket (a service user's /run/identity-agent) at the
// other end, the
// document may not exceed MaxStatusBytes, and ctx bounds the whole
// exchange, body included. A connection the agent closed before answering
// (at its connection cap, under a flood) is retried on a new one within
// ctx (see doRetrying); a missing or refused socket fails at once.
func Fetch(ctx context.Context, addr string) (Report, error) {
	var r Report
	sock := strings.TrimPrefix(addr, "unix://")
	if strings.Contains(sock, "://") {
		return r, fmt.Errorf("admin address %q: the agent serves status only on its admin unix socket (a path or unix:///path)", addr)
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "unix", sock)
			if err != nil {
				return nil, err
			}
			if err := checkServer(c.(*net.UnixConn), sock); err != nil {
				_ = c.Close()
				return nil, err
			}
			return c, nil
		},
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: maxHeaderBytes,
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent/status", nil)
	if err != nil {
		return r, fmt.Errorf("admin %s: %w", addr, err)
	}
	resp, err := doRetrying(ctx, client, req)
	if err != nil {
		var untrusted *untrustedServerError
		if errors.As(err, &untrusted) {
			return r, fmt.Errorf("admin socket %s: %w", sock, untrusted)
		}
		return r, fmt.Errorf("agent not reachable at %s: %w", addr, unwrapURLError(err))
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return r, fmt.Errorf("agent at %s answered %s: %s", addr, resp.Status, strings.TrimSpace(string(body)))
	}
	if resp.ContentLength > MaxStatusBytes {
		return r, fmt.Errorf("agent at %s: status document of %d bytes is over the %d MiB limit; not reading it", addr, resp.ContentLength, MaxStatusBytes>>20)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxStatusBytes+1))
	switch {
	case err != nil && ctx.Err() != nil:
		return r, fmt.Errorf("agent at %s: status document not complete in time (%d bytes read): %w", addr, len(body), ctx.Err())
	case err != nil:
		return r, fmt.Errorf("agent at %s: reading the status document: %w", addr, err)
	case len(body) > MaxStatusBytes:
		return r, fmt.Errorf("agent at %s: status document over the %d MiB limit; stopped reading it", addr, MaxStatusBytes>>20)
	}
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&r); err != nil {
		return r, fmt.Errorf("agent at %s: bad status document: %w", addr, err)
	}
	return r, nil
}

// fetchAttempts bounds how often Fetch sends its request on a new
// connection when the agent closed the previous one before answering.
const fetchAttempts = 8

// doRetrying sends req, and sends it again on a new connection, while ctx
// allows and at most fetchAttempts times, when the agent closed the
// connection before answering (EPIPE, ECONNRESET, EOF). At its connection
// cap the admin socket closes a connection whose request has not arrived
// yet (see capListener): a client descheduled between connect and write
// under a flood of idle connections meets exactly that, and the agent read
// nothing of its request. GET /status has no side effects, so repeating
// it is safe even where the agent did read it. A refused or missing
// socket (no agent) fails at once.
func doRetrying(ctx context.Context, client *http.Client, req *http.Request) (*http.Response, error) {
	backoff := 10 * time.Millisecond
	for attempt := 1; ; attempt++ {
		resp, err := client.Do(req)
		if err == nil || attempt >= fetchAttempts || !closedUnanswered(err) {
			return resp, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// closedUnanswered reports whether err says the server closed the
// connection before any response arrived. net/http reports a close it
// sees before it has handed the request to its read loop as its
// unexported errServerClosedIdle, even on a fresh connection (a race with
// the close): only its text can tell.
func closedUnanswered(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		strings.Contains(err.Error(), "http: server closed idle connection")
}

// untrustedServerError is a socket served by a uid that is neither root
// nor ours, from a directory that is not its own: anyone can create a
// socket at a path the agent is not using.
type untrustedServerError struct{ uid, ours int }

func (e *untrustedServerError) Error() string {
	return fmt.Sprintf("served by uid %d, which is neither root nor this user (uid %d) and does not own the socket's directory: not trusting its answer", e.uid, e.ours)
}

// checkServer accepts a server run by root or by our own uid, or by the
// user whose own directory holds the socket (root asking a service run as
// its own user, the way the shipped units run the agent).
func checkServer(c *net.UnixConn, sock string) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	uid, ok, err := peerUID(raw)
	if err != nil {
		return fmt.Errorf("cannot tell which user serves the socket: %w", err)
	}
	if !ok { // no way to ask on this platform
		return nil
	}
	if ours := os.Getuid(); uid != 0 && uid != ours && !servedFromItsOwnDir(sock, uid) {
		return &untrustedServerError{uid: uid, ours: ours}
	}
	return nil
}

func unwrapURLError(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		inner := u.Unwrap()
		if inner == nil {
			return err
		}
		if _, isOp := inner.(*net.OpError); isOp {
			return inner
		}
		err = inner
	}
}
