package rotation

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"go.uber.org/zap"
)

// outputRunner owns one Output: its writer, its cached JWT-SVIDs, its
// retry state and its part of the Manager's State. This file holds its
// event loop and the sync pass (fetch tokens → build → write → reload);
// build.go, jwt.go, watchdog.go and guard.go hold the rest.
type outputRunner struct {
	m      *Manager
	out    Output
	names  []string
	writer *atomicdir.Writer
	log    *zap.Logger

	// busyUntil is when the step the loop is in must have ended by its own
	// deadlines (unix nanoseconds), 0 while the loop waits: Stalled.
	busyUntil atomic.Int64

	// Wake-ups for loop; buffer 1, sends never block.
	pushCh, jwtCh, guardCh, watchdogCh, releaseCh chan struct{}

	// syncMu serializes every touch of the disk (the loop and WriteAll).
	// The fields below it are guarded by it.
	syncMu        sync.Mutex
	lastX509      *workloadapi.X509Context
	lastFiles     []atomicdir.File
	tokens        []tokenState
	reloadPending bool
	reloadNext    int
	// atStart: the pending reloads are those held since the Manager was
	// built (HoldReloads); cleared once they ran or none was due.
	atStart       bool
	failures      int
	guardRestores int
	// Format and verify state (formats.go, verify.go).
	p12            map[string]p12Entry
	knownTB        map[string]bool
	verifiedSerial string
	lastSVID       *x509svid.SVID // the SVID of lastFiles, for verify after a guard restore

	// stMu guards st, the timers and the expiry label; held only briefly.
	stMu          sync.Mutex
	st            OutputState
	expiryLabel   string
	watchdogTimer *time.Timer
	alarm         Expiry // see watchdogTick
	jwtTimers     []*time.Timer
}

func newOutputRunner(m *Manager, o Output, w *atomicdir.Writer) *outputRunner {
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
		releaseCh:  make(chan struct{}, 1),
		tokens:     make([]tokenState, len(o.JWT)),
		jwtTimers:  make([]*time.Timer, len(o.JWT)),
		knownTB:    knownTrustBundles(o),
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
		case <-r.releaseCh:
			reason = "ready"
		case <-r.guardCh:
			// Let a burst of events (ours or someone else's) settle.
			if !guardArmed {
				guardArmed = true
				guardT.Reset(r.guardDelay())
			}
			continue
		case <-guardT.C:
			guardArmed = false
			r.busy(r.syncBudget())
			r.guardCheck(ctx)
			r.busy(0)
			continue
		case <-r.watchdogCh:
			r.watchdogTick()
			continue
		}
		r.busy(r.syncBudget())
		err := r.sync(ctx, reason)
		r.busy(0)
		if err != nil && !errors.Is(err, errNotReady) && ctx.Err() == nil {
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

// busy records that the loop starts a step that its own deadlines end
// within d (0: the loop waits again).
func (r *outputRunner) busy(d time.Duration) {
	if d <= 0 {
		r.busyUntil.Store(0)
		return
	}
	r.busyUntil.Store(time.Now().Add(d).UnixNano())
}

// syncBudget is the longest one pass may take by its own deadlines: every
// JWT-SVID fetch, every reload (its timeout, or defaultServiceTimeout when
// the Reloader does not say), the verify probe, plus the slack for what
// has no deadline of its own (building and writing the files, the guard's
// checks).
func (r *outputRunner) syncBudget() time.Duration {
	d := r.m.cfg.stepSlack + time.Duration(len(r.out.JWT))*jwtFetchTimeout + r.out.VerifyTimeout
	for _, rl := range r.out.Reloads {
		t := defaultServiceTimeout
		if tr, ok := rl.(interface{ Timeout() time.Duration }); ok && tr.Timeout() > 0 {
			t = tr.Timeout()
		}
		d += t + waitDelay
	}
	return d
}

// sync builds the files from the current material, writes them and runs
// the reloads if they changed. A returned error means "retry later",
// except errNotReady. The failure count that drives the backoff is kept
// here and only here.
func (r *outputRunner) sync(ctx context.Context, reason string) error {
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	err := r.syncLocked(ctx, reason)
	switch {
	case errors.Is(err, errNotReady):
		r.log.Debug("waiting for the Workload API", zap.String("reason", reason))
	case err != nil:
		r.failures++
	default:
		r.failures = 0
	}
	return err
}

func (r *outputRunner) syncLocked(ctx context.Context, reason string) error {
	src := r.m.src
	x := src.X509Context()
	r.refreshTokens(ctx, x)
	in := buildInput{x509: x, jwtBundles: src.JWTBundles(), tokens: r.tokens, now: time.Now(), p12Prev: r.p12, knownTrustBundles: r.knownTB}
	if r.out.PKCS12.wanted() {
		in.pkcs12Password, in.pkcs12Err = readPKCS12Password(r.out.PKCS12.PasswordFile)
	}
	files, mat, err := build(r.out, in)
	if errors.Is(err, errNotReady) {
		return err
	}
	if err != nil {
		r.writeFailed("not writing: material rejected or unavailable; keeping the last good files", reason, err)
		return err
	}
	changed, werr := r.write(files)
	r.hook(writeEvent{Output: r.out.Name, Changed: changed, Serial: serialOf(mat.svid), Err: werr, At: time.Now()})
	if werr != nil && !changed {
		// atomicdir errors name the directory already.
		r.writeFailed("write failed; keeping the last good files", reason, werr)
		return werr
	}
	// From here the new set is live, even if a step after the swap failed
	// (werr != nil && changed): it must be reloaded and guarded as such.
	r.lastFiles = files
	r.lastX509 = mat.x509
	r.rememberFormats(files, mat)
	r.recordWrite(mat, changed)
	if werr != nil {
		r.writeFailed("write completed with an error; the new files are live", reason, werr)
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
	if r.reloadPending && r.m.held.Load() {
		// ReleaseReloads pokes the loop; verification follows the reloads.
		r.log.Debug("files written; reloads held until the agent is ready")
		if werr != nil {
			return werr
		}
		return mat.jwtErr
	}
	reloading := r.reloadPending
	if rerr := r.runReloads(ctx); rerr != nil {
		return errors.Join(werr, rerr)
	}
	if verr := r.verifyServed(ctx, mat.svid, reloading); verr != nil {
		return errors.Join(werr, verr)
	}
	if werr != nil {
		return werr
	}
	return mat.jwtErr
}

// writeFailed is the one place a failure to produce or write an output's
// files is reported: metric, State and log line.
func (r *outputRunner) writeFailed(msg, reason string, err error) {
	r.m.metrics.writeFailures.WithLabelValues(r.out.Name).Inc()
	r.setWriteError(err)
	fields := []zap.Field{zap.Error(err)}
	if reason != "" {
		fields = append(fields, zap.String("reason", reason))
	}
	r.log.Error(msg, fields...)
}

// write writes the set, first recreating the output directory if someone
// removed it (the atomicdir.Writer only creates it when constructed).
func (r *outputRunner) write(files []atomicdir.File) (bool, error) {
	if _, err := os.Stat(r.out.Dir); errors.Is(err, fs.ErrNotExist) {
		w, err := atomicdir.NewWriter(r.out.Dir, atomicdir.WithOwner(r.out.Owner))
		if err != nil {
			return false, err
		}
		r.log.Warn("output directory was missing; recreated it", zap.String("dir", r.out.Dir))
		r.writer = w
	}
	return r.writer.Write(files)
}

// runReloads runs the pending reloads in order. After a failure the retry
// resumes at the reload that failed: the ones before it already saw the
// new files, and a restart must not be repeated for nothing.
func (r *outputRunner) runReloads(ctx context.Context) error {
	if !r.reloadPending {
		if !r.m.held.Load() {
			r.atStart = false // nothing was due at start
		}
		return nil
	}
	w := r.written()
	for r.reloadNext < len(r.out.Reloads) {
		rl := r.out.Reloads[r.reloadNext]
		kind := rl.Kind()
		r.m.metrics.reloads.WithLabelValues(r.out.Name, kind).Inc()
		start := time.Now()
		err := r.reloadOne(ctx, rl, w)
		if errors.Is(err, ErrNotRunning) {
			r.log.Info("reload skipped at start: the service is not running, it reads the new files when it starts",
				zap.String("kind", kind), zap.String("detail", err.Error()))
			r.reloadNext++
			continue
		}
		if err != nil {
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
	r.reloadPending, r.atStart = false, false
	if len(r.out.Reloads) > 0 {
		r.stMu.Lock()
		r.st.LastReload = time.Now()
		if r.out.Verify == nil {
			// With verify, the check that follows clears it: status must
			// not flip to OK while an unverified reload is being retried.
			r.st.LastReloadError = ""
		}
		r.stMu.Unlock()
	}
	return nil
}

// reloadOne runs one reload; the ones held at start go through
// ReloadAtStart where the reloader has it.
func (r *outputRunner) reloadOne(ctx context.Context, rl Reloader, w Written) error {
	if sr, ok := rl.(StartReloader); ok && r.atStart {
		return sr.ReloadAtStart(ctx, w)
	}
	err := rl.Reload(ctx, w)
	if errors.Is(err, ErrNotRunning) {
		// Only ReloadAtStart may skip.
		err = fmt.Errorf("%w (skipped only at start)", err)
	}
	return err
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
	r.st.NotBefore, r.st.NotAfter = leaf.NotBefore, leaf.NotAfter
	if r.expiryLabel != "" && r.expiryLabel != mat.spiffeID {
		r.m.metrics.expiry.DeleteLabelValues(r.out.Name, r.expiryLabel)
	}
	r.expiryLabel = mat.spiffeID
	r.m.metrics.expiry.WithLabelValues(r.out.Name, mat.spiffeID).Set(float64(leaf.NotAfter.Unix()))
	r.armWatchdogLocked(leaf.NotBefore, leaf.NotAfter)
}

func (r *outputRunner) snapshot(now time.Time) OutputState {
	r.stMu.Lock()
	defer r.stMu.Unlock()
	s := r.st
	s.Files = append([]string(nil), r.st.Files...)
	s.JWT = append([]JWTState(nil), r.st.JWT...)
	if r.st.Verify != nil {
		v := *r.st.Verify
		s.Verify = &v
	}
	for i := range s.JWT {
		s.JWT[i].Audience = append([]string(nil), s.JWT[i].Audience...)
	}
	// Graded at the moment of the snapshot, not on the watchdog's timer,
	// so status is exact whenever it is asked.
	s.Expiry = ExpiryOf(s.NotBefore, s.NotAfter, r.m.cfg.expiryWindow, now)
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
