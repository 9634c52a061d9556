package svid

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type x509Watcher struct{ s *Source }

func (w x509Watcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	s := w.s
	s.mu.Lock()
	s.x509ctx = c
	s.status.X509Updates++
	s.status.LastUpdate = time.Now()
	s.status.NoIdentity, s.status.Reason = false, ""
	reconnected := false
	if !s.status.Connected {
		if s.everUp {
			s.status.Reconnects++
			reconnected = true
		}
		s.status.Connected = true
		s.everUp = true
	}
	s.notifyLocked()
	s.mu.Unlock()
	s.readyOnce.Do(func() { close(s.ready) })
	if reconnected {
		s.cfg.log.Info("workload API stream re-established", zap.String("addr", s.cfg.addr))
	}
	if s.cfg.log.Core().Enabled(zap.DebugLevel) {
		fields := []zap.Field{zap.Int("svids", len(c.SVIDs)), zap.Int("bundles", c.Bundles.Len())}
		if len(c.SVIDs) > 0 && len(c.SVIDs[0].Certificates) > 0 {
			leaf := c.SVIDs[0].Certificates[0]
			fields = append(fields, zap.Stringer("spiffe_id", c.SVIDs[0].ID),
				zap.String("serial", leaf.SerialNumber.Text(16)), zap.Time("not_after", leaf.NotAfter))
		}
		s.cfg.log.Debug("X.509 context update", fields...)
	}
}

func (w x509Watcher) OnX509ContextWatchError(err error) {
	if isCanceled(err) {
		return
	}
	// A gRPC status means the stream or connection failed; anything else is
	// a response that did not parse while the stream itself is still up.
	st, isStatus := status.FromError(err)
	reason := ""
	if isStatus && st.Code() == codes.PermissionDenied {
		reason = noIdentityReason(os.Getuid())
	}
	if isStatus {
		s := w.s
		s.mu.Lock()
		s.status.NoIdentity, s.status.Reason = reason != "", reason
		s.mu.Unlock()
	}
	if reason != "" {
		err = fmt.Errorf("%s: %w", reason, err)
	}
	w.s.recordError(fmt.Errorf("X.509 context stream from %s: %w", w.s.cfg.addr, err), isStatus)
}

// noIdentityReason is what a PermissionDenied X.509 stream means. SPIRE's
// agent answers it to a caller that no registration entry matches; the
// agent is attested by its uid (and whatever else the entries select).
func noIdentityReason(uid int) string {
	return fmt.Sprintf("no identity issued to this workload (uid %d): registration entries deleted or not yet propagated", uid)
}

type jwtWatcher struct{ s *Source }

func (w jwtWatcher) OnJWTBundlesUpdate(set *jwtbundle.Set) {
	s := w.s
	s.mu.Lock()
	// A stream that (re)sends identical bundles, as on every reconnect,
	// must not wake subscribers: they would rewrite and debounce for
	// nothing, delaying the X.509 update that matters.
	changed := !jwtSetsEqual(s.jwtBundles, set)
	s.jwtBundles = set
	s.status.JWTBundleUpdates++
	s.status.LastUpdate = time.Now()
	if changed {
		s.notifyLocked()
	}
	s.mu.Unlock()
	s.cfg.log.Debug("JWT bundles update", zap.Int("bundles", set.Len()))
}

func (w jwtWatcher) OnJWTBundlesWatchError(err error) {
	if isCanceled(err) {
		return
	}
	w.s.recordError(fmt.Errorf("JWT bundle stream from %s: %w", w.s.cfg.addr, err), false)
}

func isCanceled(err error) bool {
	return errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled
}

func jwtSetsEqual(a, b *jwtbundle.Set) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.Len() != b.Len() {
		return false
	}
	for _, ab := range a.Bundles() {
		bb, ok := b.Get(ab.TrustDomain())
		if !ok || !ab.Equal(bb) {
			return false
		}
	}
	return true
}
