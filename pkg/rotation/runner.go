package rotation

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"go.uber.org/zap"

	"github.com/identity-agent/identity-agent/pkg/svid"
)

// errNotReady: there is no material yet; the next push will bring it, so
// this is not a failure to retry.
var errNotReady = errors.New("waiting for the Workload API")

// outputRunner owns one Output: its writer, its cached JWT-SVIDs, its
// retry state and its part of the Manager's State.
type outputRunner struct {
	m      *Manager
	out    Output
	names  []string
	writer *svid.DirWriter
	log    *zap.Logger

	// Wake-ups for loop; buffer 1, sends never block.
	pushCh, jwtCh, guardCh, watchdogCh chan struct{}

	// syncMu serializes every touch of the disk (Run's loop and WriteAll).
	// The fields below it are guarded by it.
	syncMu        sync.Mutex
	lastX509      *workloadapi.X509Context
	lastFiles     []svid.File
	tokens        []tokenState
	reloadPending bool
	reloadNext    int
	failures      int
	guardRestores int

	// stMu guards st, the timers and the expiry label; held only briefly.
	stMu          sync.Mutex
	st            OutputState
	expiryLabel   string
	watchdogTimer *time.Timer
	lastWarn      time.Time
	jwtTimers     []*time.Timer
}

type tokenState struct {
	svid      *jwtsvid.SVID
	refreshAt time.Time
	err       error
}

func newOutputRunner(m *Manager, o Output, w *svid.DirWriter) *outputRunner {
	r := &outputRunner{
		m:          m,
		out:        o,
		names:      o.fileNames(),
		writer:     w,
		log:        m.log.With(zap.String("output", o.Name)),
		pushCh:     make(chan struct{}, 1),
		jwtCh:      make(chan struct{}, 1),
		guardCh:    make(chan struct{}, 1),
		watchdogCh: make(chan struct{}, 1),
		tokens:     make([]tokenState, len(o.JWT)),
		jwtTimers:  make([]*time.Timer, len(o.JWT)),
	}
	r.st = OutputState{Name: o.Name, Dir: o.Dir, Files: append([]string(nil), r.names...)}
	for _, j := range o.JWT {
		r.st.JWT = append(r.st.JWT, JWTState{File: j.File, Audience: append([]string(nil), j.Audience...)})
	}
	return r
}

func (r *outputRunner) poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// loop serves one output until ctx is done.
func (r *outputRunner) loop(ctx context.Context) {
	retry := stoppedTimer()
	guardT := stoppedTimer()
	defer retry.Stop()
	defer guardT.Stop()
	guardArmed := false
	for {
		var reason string
		select {
		case <-ctx.Done():
			return
		case <-r.pushCh:
			reason = "update"
		case <-r.jwtCh:
			reason = "jwt-refresh"
		case <-retry.C:
			reason = "retry"
		case <-r.guardCh:
			// Let a burst of events (ours or someone else's) settle.
			if !guardArmed {
				guardArmed = true
				guardT.Reset(r.guardDelay())
			}
			continue
		case <-guardT.C:
			guardArmed = false
			r.guardCheck(ctx)
			continue
		case <-r.watchdogCh:
			r.watchdogTick()
			continue
		}
		if err := r.sync(ctx, reason); err != nil && !errors.Is(err, errNotReady) && ctx.Err() == nil {
			r.syncMu.Lock()
			d := r.m.backoff(r.failures)
			r.syncMu.Unlock()
			retry.Reset(d)
			r.log.Debug("retry scheduled", zap.Duration("in", d))
		} else {
			retry.Stop()
		}
	}
}

func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

// material is what one build produced besides the files.
type material struct {
	x509     *workloadapi.X509Context
	svid     *x509svid.SVID
	jwtErr   error // a refresh failed but a still-valid cached token was used
	spiffeID string
}

// sync builds the files from the current material, writes them and runs
// the reloads if they changed. A returned error means "retry later",
// except errNotReady.
func (r *outputRunner) sync(ctx context.Context, reason string) error {
	r.syncMu.Lock()
	defer r.syncMu.Unlock()

	files, mat, err := r.build(ctx)
	if err != nil {
		if errors.Is(err, errNotReady) {
			r.log.Debug("waiting for the Workload API", zap.String("reason", reason))
			return err
		}
		r.failures++
		r.m.metrics.writeFailures.WithLabelValues(r.out.Name).Inc()
		r.setWriteError(err)
		r.log.Error("not writing: material rejected or unavailable; keeping the last good files",
			zap.String("reason", reason), zap.Error(err))
		return err
	}
	changed, err := r.write(files)
	r.hook(writeEvent{Output: r.out.Name, Changed: changed, Serial: serialOf(mat.svid), Err: err, At: time.Now()})
	if err != nil && !changed {
		// DirWriter errors name the directory already.
		r.failures++
		r.m.metrics.writeFailures.WithLabelValues(r.out.Name).Inc()
		r.setWriteError(err)
		r.log.Error("write failed; keeping the last good files", zap.String("reason", reason), zap.Error(err))
		return err
	}
	// From here the new set is live, even if a step after the swap failed
	// (err != nil && changed): it must be reloaded and guarded as such.
	r.lastFiles = files
	r.lastX509 = mat.x509
	r.recordWrite(mat, changed)
	if err != nil {
		r.failures++
		r.m.metrics.writeFailures.WithLabelValues(r.out.Name).Inc()
		r.setWriteError(err)
		r.log.Error("write completed with an error; the new files are live", zap.String("reason", reason), zap.Error(err))
	}
	if changed {
		r.m.metrics.rotations.WithLabelValues(r.out.Name).Inc()
		r.reloadPending, r.reloadNext = true, 0
		fields := []zap.Field{zap.String("reason", reason), zap.String("dir", r.out.Dir)}
		if mat.svid != nil {
			fields = append(fields, zap.String("spiffe_id", mat.svid.ID.String()),
				zap.String("serial", serialOf(mat.svid)), zap.Time("not_after", mat.svid.Certificates[0].NotAfter))
		}
		r.log.Info("files written", fields...)
	}
	r.refreshWatchesLocked()
	if rerr := r.runReloads(ctx); rerr != nil {
		r.failures++
		return errors.Join(err, rerr)
	}
	if err != nil {
		return err // failures was counted above
	}
	if mat.jwtErr != nil {
		r.failures++
		return mat.jwtErr
	}
	r.failures = 0
	return nil
}

// write writes the set, first recreating the output directory if someone
// removed it (the DirWriter only creates it when constructed).
func (r *outputRunner) write(files []svid.File) (bool, error) {
	if _, err := os.Stat(r.out.Dir); errors.Is(err, fs.ErrNotExist) {
		w, err := svid.NewDirWriter(r.out.Dir, svid.WithOwner(r.out.Owner))
		if err != nil {
			return false, err
		}
		r.log.Warn("output directory was missing; recreated it", zap.String("dir", r.out.Dir))
		r.writer = w
	}
	return r.writer.Write(files)
}

// build computes the output's files from the Source's current material.
// Nothing here touches the disk.
func (r *outputRunner) build(ctx context.Context) ([]svid.File, material, error) {
	var (
		files []svid.File
		mat   material
		src   = r.m.src
		o     = r.out
		now   = time.Now()
	)
	x := src.X509Context()
	mat.x509 = x
	if o.wantsX509() {
		if x == nil {
			return nil, mat, fmt.Errorf("%w: no X.509 context received yet", errNotReady)
		}
		picked, err := o.Selector.Pick(x.SVIDs)
		if err != nil {
			return nil, mat, err
		}
		if len(picked.Certificates) == 0 {
			return nil, mat, fmt.Errorf("SVID %s has no certificates", picked.ID)
		}
		mat.svid = picked
		mat.spiffeID = picked.ID.String()
		if o.CertFile != "" || o.KeyFile != "" {
			if err := svid.Validate(picked, x.Bundles, now); err != nil {
				return nil, mat, fmt.Errorf("validate SVID %s serial %s: %w", picked.ID, serialOf(picked), err)
			}
		}
		if o.CertFile != "" {
			files = append(files, svid.File{Name: o.CertFile, Data: svid.EncodeCertsPEM(picked.Certificates), Mode: o.CertMode})
		}
		if o.KeyFile != "" {
			key, err := svid.EncodeKeyPEM(picked.PrivateKey)
			if err != nil {
				return nil, mat, fmt.Errorf("encode key of %s: %w", picked.ID, err)
			}
			files = append(files, svid.File{Name: o.KeyFile, Data: key, Mode: o.KeyMode})
		}
		if o.BundleFile != "" {
			certs := svid.BundleCerts(x, picked.ID.TrustDomain(), o.IncludeFederated, o.IntermediatesInBundle)
			if len(certs) == 0 {
				return nil, mat, fmt.Errorf("no X.509 bundle for trust domain %s", picked.ID.TrustDomain())
			}
			files = append(files, svid.File{Name: o.BundleFile, Data: svid.EncodeCertsPEM(certs), Mode: o.BundleMode})
		}
	}

	// JWT-SVIDs are minted on request, not pushed: refetch on every X.509
	// push (a new registration or CA shows there first), when a token
	// reaches half its lifetime, and after a failed fetch.
	x509Pushed := x != r.lastX509
	for i, jf := range o.JWT {
		t := &r.tokens[i]
		if x509Pushed || t.svid == nil || t.err != nil || !now.Before(t.refreshAt) {
			r.fetchJWT(ctx, i)
		}
		switch {
		case t.err == nil:
		case t.svid != nil && time.Now().Before(t.svid.Expiry):
			// Keep serving the still-valid token; retry the fetch.
			mat.jwtErr = errors.Join(mat.jwtErr, fmt.Errorf("jwt file %s: refresh failed, kept the current token: %w", jf.File, t.err))
		default:
			return nil, mat, fmt.Errorf("jwt file %s: %w", jf.File, t.err)
		}
		if mat.spiffeID == "" {
			mat.spiffeID = t.svid.ID.String()
		}
		files = append(files, svid.File{Name: jf.File, Data: []byte(t.svid.Marshal() + "\n"), Mode: jf.Mode})
	}

	if o.JWTBundleFile != "" {
		data, err := r.jwks(mat)
		if err != nil {
			return nil, mat, err
		}
		files = append(files, svid.File{Name: o.JWTBundleFile, Data: data, Mode: o.JWTBundleMode})
	}
	return files, mat, nil
}

func (r *outputRunner) jwks(mat material) ([]byte, error) {
	set := r.m.src.JWTBundles()
	if set == nil || set.Len() == 0 {
		// They come on their own stream, often just after the X.509 context.
		return nil, fmt.Errorf("jwt bundle file %s: %w: no JWT bundles received yet", r.out.JWTBundleFile, errNotReady)
	}
	var bundles []*jwtbundle.Bundle
	if r.out.IncludeFederated {
		bundles = set.Bundles()
	} else {
		td, err := r.ownTrustDomain(mat)
		if err != nil {
			return nil, fmt.Errorf("jwt bundle file %s: %w", r.out.JWTBundleFile, err)
		}
		b, ok := set.Get(td)
		if !ok {
			return nil, fmt.Errorf("jwt bundle file %s: no JWT bundle for trust domain %s", r.out.JWTBundleFile, td)
		}
		bundles = []*jwtbundle.Bundle{b}
	}
	data, err := svid.EncodeJWKS(bundles...)
	if err != nil {
		return nil, fmt.Errorf("jwt bundle file %s: %w", r.out.JWTBundleFile, err)
	}
	return data, nil
}

// ownTrustDomain is the trust domain of the output's identity, from
// whatever names it: the picked SVID, a JWT-SVID, the selector, or the
// Workload API's default SVID.
func (r *outputRunner) ownTrustDomain(mat material) (spiffeid.TrustDomain, error) {
	if mat.spiffeID != "" {
		if id, err := spiffeid.FromString(mat.spiffeID); err == nil {
			return id.TrustDomain(), nil
		}
	}
	if r.out.Selector.SpiffeID != "" {
		id, err := spiffeid.FromString(r.out.Selector.SpiffeID)
		if err != nil {
			return spiffeid.TrustDomain{}, fmt.Errorf("selector spiffe_id %q: %w", r.out.Selector.SpiffeID, err)
		}
		return id.TrustDomain(), nil
	}
	if mat.x509 != nil {
		if sv, err := r.out.Selector.Pick(mat.x509.SVIDs); err == nil {
			return sv.ID.TrustDomain(), nil
		}
	}
	return spiffeid.TrustDomain{}, errors.New("cannot tell the output's trust domain yet (no SVID)")
}

// fetchJWT refreshes token i and re-arms its refresh timer.
func (r *outputRunner) fetchJWT(ctx context.Context, i int) {
	jf := r.out.JWT[i]
	t := &r.tokens[i]
	fctx, cancel := context.WithTimeout(ctx, jwtFetchTimeout)
	defer cancel()
	fetched := time.Now()
	sv, err := r.m.src.FetchJWTSVID(fctx, r.out.Selector, jf.Audience)
	var refreshAt time.Time
	if err != nil {
		t.err = err
		// The retry backoff drives the next attempt.
	} else {
		t.svid, t.err = sv, nil
		t.refreshAt = halfLife(sv, fetched)
		refreshAt = t.refreshAt
	}

	r.stMu.Lock()
	defer r.stMu.Unlock()
	js := &r.st.JWT[i]
	if err != nil {
		js.LastError = err.Error()
		return
	}
	js.LastError = ""
	js.NextFetch = refreshAt
	if old := r.jwtTimers[i]; old != nil {
		old.Stop()
	}
	r.jwtTimers[i] = time.AfterFunc(time.Until(refreshAt), func() { r.poke(r.jwtCh) })
}

// halfLife is when a token should be replaced: at half of its lifetime
// (iat..exp), like SPIRE does for SVIDs, so a fetch failure leaves the
// other half to recover in.
func halfLife(sv *jwtsvid.SVID, fetched time.Time) time.Time {
	start := fetched
	if iat, ok := numericClaim(sv.Claims["iat"]); ok && iat.Before(sv.Expiry) && iat.Before(fetched.Add(time.Minute)) {
		start = iat
	}
	at := start.Add(sv.Expiry.Sub(start) / 2)
	// at is wall-clock; re-anchor it on fetched so the timer uses the
	// monotonic clock.
	d := max(at.Sub(fetched), minJWTRefresh)
	return fetched.Add(d)
}

func numericClaim(v any) (time.Time, bool) {
	switch n := v.(type) {
	case float64:
		return time.Unix(int64(n), 0), true
	case int64:
		return time.Unix(n, 0), true
	case int:
		return time.Unix(int64(n), 0), true
	case json.Number:
		f, err := n.Float64()
		if err != nil {
			return time.Time{}, false
		}
		return time.Unix(int64(f), 0), true
	}
	return time.Time{}, false
}

// runReloads runs the pending reloads in order. After a failure the retry
// resumes at the reload that failed: the ones before it already saw the
// new files, and a restart must not be repeated for nothing.
func (r *outputRunner) runReloads(ctx context.Context) error {
	if !r.reloadPending {
		return nil
	}
	for r.reloadNext < len(r.out.Reloads) {
		rl := r.out.Reloads[r.reloadNext]
		kind := rl.Kind()
		r.m.metrics.reloads.WithLabelValues(r.out.Name, kind).Inc()
		start := time.Now()
		if err := rl.Reload(ctx); err != nil {
			r.m.metrics.reloadFailures.WithLabelValues(r.out.Name, kind).Inc()
			err = fmt.Errorf("reload %d/%d (%s): %w", r.reloadNext+1, len(r.out.Reloads), kind, err)
			r.stMu.Lock()
			r.st.LastReloadError = err.Error()
			r.stMu.Unlock()
			if ctx.Err() == nil { // not worth an error line at shutdown
				r.log.Error("reload failed; will retry", zap.Error(err))
			}
			return err
		}
		r.log.Info("reloaded", zap.String("kind", kind), zap.Duration("took", time.Since(start)))
		r.reloadNext++
	}
	r.reloadPending = false
	if len(r.out.Reloads) > 0 {
		r.stMu.Lock()
		r.st.LastReload = time.Now()
		r.st.LastReloadError = ""
		r.stMu.Unlock()
	}
	return nil
}

func (r *outputRunner) setWriteError(err error) {
	r.stMu.Lock()
	r.st.LastWriteError = err.Error()
	r.stMu.Unlock()
}

func (r *outputRunner) recordWrite(mat material, changed bool) {
	r.stMu.Lock()
	defer r.stMu.Unlock()
	r.st.LastWriteError = ""
	if mat.jwtErr != nil {
		r.st.LastWriteError = mat.jwtErr.Error()
	}
	for i := range r.tokens {
		if t := r.tokens[i]; t.svid != nil {
			r.st.JWT[i].Expiry = t.svid.Expiry
		}
	}
	if changed || r.st.LastWrite.IsZero() {
		r.st.LastWrite = time.Now()
	}
	if changed {
		r.st.Rotations++
	}
	if mat.spiffeID != "" {
		r.st.SpiffeID = mat.spiffeID
	}
	if mat.svid == nil {
		return
	}
	leaf := mat.svid.Certificates[0]
	r.st.Serial = serialString(leaf.SerialNumber)
	r.st.NotAfter = leaf.NotAfter
	if r.expiryLabel != "" && r.expiryLabel != mat.spiffeID {
		r.m.metrics.expiry.DeleteLabelValues(r.out.Name, r.expiryLabel)
	}
	r.expiryLabel = mat.spiffeID
	r.m.metrics.expiry.WithLabelValues(r.out.Name, mat.spiffeID).Set(float64(leaf.NotAfter.Unix()))
	r.armWatchdogLocked(leaf.NotAfter)
}

func (r *outputRunner) snapshot(now time.Time, connected bool) OutputState {
	r.stMu.Lock()
	defer r.stMu.Unlock()
	s := r.st
	s.Files = append([]string(nil), r.st.Files...)
	s.JWT = append([]JWTState(nil), r.st.JWT...)
	for i := range s.JWT {
		s.JWT[i].Audience = append([]string(nil), s.JWT[i].Audience...)
	}
	// Computed here rather than only on the watchdog's timer so status is
	// exact the moment the connection drops or comes back.
	if !s.NotAfter.IsZero() {
		s.Expired = !now.Before(s.NotAfter)
		s.ExpiresSoon = !connected && !now.Before(s.NotAfter.Add(-r.m.cfg.expiryWindow))
	}
	written := !s.LastWrite.IsZero()
	s.Healthy = written && s.LastWriteError == "" && s.LastReloadError == "" && !s.Expired
	return s
}

func (r *outputRunner) hook(ev writeEvent) {
	if h := r.m.cfg.writeHook; h != nil {
		h(ev)
	}
}

func (r *outputRunner) stopTimers() {
	r.stMu.Lock()
	defer r.stMu.Unlock()
	if r.watchdogTimer != nil {
		r.watchdogTimer.Stop()
		r.watchdogTimer = nil
	}
	for i, t := range r.jwtTimers {
		if t != nil {
			t.Stop()
			r.jwtTimers[i] = nil
		}
	}
}

// ---------------------------------------------------------------- watchdog

// armWatchdogLocked sets the expiry timer for a newly written SVID: it
// fires when NotAfter-window is reached, not on a polling tick.
func (r *outputRunner) armWatchdogLocked(notAfter time.Time) {
	if r.watchdogTimer != nil {
		r.watchdogTimer.Stop()
	}
	d := time.Until(notAfter.Add(-r.m.cfg.expiryWindow))
	r.watchdogTimer = time.AfterFunc(max(d, 0), func() { r.poke(r.watchdogCh) })
}

// watchdogCheck is how often, once inside the window, the watchdog looks
// at the connection: the Source does not announce a disconnect, and a
// warning a few seconds late is fine while one a minute late is not.
func (r *outputRunner) watchdogCheck() time.Duration {
	if d := r.m.cfg.watchdogCheck; d > 0 {
		return d
	}
	return min(max(r.m.cfg.expiryWindow/60, time.Second), 10*time.Second)
}

// watchdogWarnEvery rate-limits the repeated warning.
func (r *outputRunner) watchdogWarnEvery() time.Duration {
	return min(max(r.m.cfg.expiryWindow/10, r.watchdogCheck()), time.Minute)
}

func (r *outputRunner) watchdogTick() {
	st := r.m.src.Status()
	r.stMu.Lock()
	defer r.stMu.Unlock()
	notAfter := r.st.NotAfter
	now := time.Now()
	if notAfter.IsZero() || now.Before(notAfter.Add(-r.m.cfg.expiryWindow)) {
		return // a newer SVID was written since the timer was set
	}
	left := notAfter.Sub(now)
	r.st.ExpiresSoon = !st.Connected
	r.st.Expired = left <= 0
	if st.Connected {
		r.lastWarn = time.Time{}
	} else if r.lastWarn.IsZero() || now.Sub(r.lastWarn) >= r.watchdogWarnEvery() {
		r.lastWarn = now
		fields := []zap.Field{zap.String("spiffe_id", r.st.SpiffeID), zap.String("serial", r.st.Serial),
			zap.Time("not_after", notAfter), zap.String("source_error", st.LastError)}
		if left > 0 {
			r.log.Warn("Workload API unreachable and the SVID on disk expires soon", append(fields, zap.Duration("left", left.Round(time.Second)))...)
		} else {
			r.log.Error("Workload API unreachable and the SVID on disk has expired", fields...)
		}
	}
	r.watchdogTimer = time.AfterFunc(r.watchdogCheck(), func() { r.poke(r.watchdogCh) })
}

// ---------------------------------------------------------------- guard

func (r *outputRunner) guardDelay() time.Duration {
	r.syncMu.Lock()
	n := r.guardRestores
	r.syncMu.Unlock()
	if n == 0 {
		return max(r.m.cfg.debounce, 20*time.Millisecond)
	}
	// Files that stay wrong right after a restore: back off rather than
	// fight whatever keeps changing them.
	return r.m.backoff(n)
}

// guardCheck compares the disk with the last files written and restores
// them if they were deleted, replaced or altered. The agent's own writes
// pass the check, so they never cause a rewrite.
func (r *outputRunner) guardCheck(ctx context.Context) {
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	if r.lastFiles == nil {
		return
	}
	// Diff is Check with the reason, which the log line needs.
	diff, err := r.writer.Diff(r.lastFiles)
	if diff == "" && err == nil {
		r.guardRestores = 0
		r.refreshWatchesLocked()
		return
	}
	r.guardRestores++
	r.log.Warn("output files were deleted or altered on disk; restoring them",
		zap.String("dir", r.out.Dir), zap.String("diff", diff), zap.NamedError("check_error", err))
	changed, werr := r.write(r.lastFiles)
	r.hook(writeEvent{Output: r.out.Name, Changed: changed, Err: werr, At: time.Now()})
	if werr != nil {
		werr = fmt.Errorf("restore %s: %w", r.out.Dir, werr)
		r.m.metrics.writeFailures.WithLabelValues(r.out.Name).Inc()
		r.setWriteError(werr)
		r.log.Error("restore failed", zap.Error(werr))
		r.poke(r.guardCh) // try again after the backoff
		return
	}
	r.refreshWatchesLocked()
	// Only a restore that does not stick counts against the guard: that is
	// the one case (something rewriting the files, or writer and checker
	// disagreeing) where restoring again at once would loop.
	if d, err := r.writer.Diff(r.lastFiles); d == "" && err == nil {
		r.guardRestores = 0
	} else {
		r.log.Warn("restored files still differ; backing off", zap.String("diff", d), zap.NamedError("check_error", err),
			zap.Duration("next_check", r.m.backoff(r.guardRestores)))
	}
	if !changed {
		return
	}
	r.stMu.Lock()
	r.st.LastWrite = time.Now()
	r.st.LastWriteError = ""
	r.stMu.Unlock()
	// The service may have read the altered files (or restarted without
	// them); reload so it runs with what is on disk again.
	r.reloadPending, r.reloadNext = true, 0
	if err := r.runReloads(ctx); err != nil {
		r.failures++
		r.poke(r.pushCh) // the push path owns the reload retry
	}
}

// refreshWatches points the guard at the output's directory and at the
// directories its files resolve to (the current versioned directory):
// writes through a symlink only show up on the directory holding the
// real file.
func (r *outputRunner) refreshWatches() {
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	r.refreshWatchesLocked()
}

func (r *outputRunner) refreshWatchesLocked() {
	g := r.m.currentGuard()
	if g == nil {
		return
	}
	dirs := map[string]bool{r.out.Dir: true}
	for _, n := range r.names {
		if p, err := filepath.EvalSymlinks(filepath.Join(r.out.Dir, n)); err == nil {
			dirs[filepath.Dir(p)] = true
		}
	}
	g.set(r, dirs)
}

// ---------------------------------------------------------------- helpers

func serialOf(sv *x509svid.SVID) string {
	if sv == nil || len(sv.Certificates) == 0 {
		return ""
	}
	return serialString(sv.Certificates[0].SerialNumber)
}

// serialString formats a serial like `openssl x509 -serial` does:
// upper-case hex of the big-endian bytes.
func serialString(n *big.Int) string {
	if n == nil {
		return ""
	}
	b := n.Bytes()
	if len(b) == 0 {
		return "00"
	}
	return strings.ToUpper(hex.EncodeToString(b))
}
