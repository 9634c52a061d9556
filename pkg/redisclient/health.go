package redisclient

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/identity-agent/identity-agent/internal/clientlist"
	"github.com/redis/go-redis/v9"
)

// HealthReport tells which path the client is on.
type HealthReport struct {
	Mode Mode `json:"mode"`
	// Path is the path of the pooled connection that served the check,
	// from the server's own view (CLIENT INFO laddr port).
	Path Path `json:"path"`
	// ServerAddr is the server-side address of that connection.
	ServerAddr string `json:"server_addr,omitempty"`
	// TLSUp is the dialer's belief: new connections go to TLS when true.
	TLSUp             bool      `json:"tls_up"`
	Fallbacks         uint64    `json:"fallbacks"`
	LastFallback      time.Time `json:"last_fallback,omitzero"`
	LastFallbackError string    `json:"last_fallback_error,omitempty"`
	// TLSAuthFailures counts TLS attempts where the port answered but
	// authentication failed (never a reason to fall back).
	TLSAuthFailures    uint64        `json:"tls_auth_failures"`
	LastTLSAuthFailure time.Time     `json:"last_tls_auth_failure,omitzero"`
	LastTLSAuthError   string        `json:"last_tls_auth_error,omitempty"`
	Latency            time.Duration `json:"latency_ns"`
}

// Health runs CLIENT INFO through the pool and reports the path of the
// connection that answered. It returns an error (and a partial report)
// when Redis does not answer.
func (c *Client) Health(ctx context.Context) (HealthReport, error) {
	d := c.d
	d.mu.Lock()
	r := HealthReport{Mode: d.mode, TLSUp: d.tlsUp, Fallbacks: d.fallbacks,
		LastFallback: d.lastFallback, LastFallbackError: d.lastFallbackErr, Path: PathUnknown,
		TLSAuthFailures: d.authFailures, LastTLSAuthFailure: d.lastAuthFailure, LastTLSAuthError: d.lastAuthErr}
	d.mu.Unlock()
	start := time.Now()
	info, err := c.rdb.Do(ctx, "CLIENT", "INFO").Text()
	if err != nil {
		var rerr redis.Error
		if !errors.As(err, &rerr) {
			return r, fmt.Errorf("redis health (%s): %w", d.mode, err)
		}
		// Server answered but refused CLIENT INFO (ACL, old server): fall
		// back to PING and the dialer's belief.
		if err := c.rdb.Ping(ctx).Err(); err != nil {
			return r, fmt.Errorf("redis health (%s): %w", d.mode, err)
		}
		r.Latency = time.Since(start)
		if r.TLSUp {
			r.Path = PathTLS
		} else {
			r.Path = PathPlaintext
		}
		return r, nil
	}
	r.Latency = time.Since(start)
	self := clientlist.ParseLine(info)
	r.ServerAddr = self["laddr"]
	r.Path = d.pathForPort(self.LocalPort())
	return r, nil
}
