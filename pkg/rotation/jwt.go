package rotation

import (
	"context"
	"encoding/json"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"go.uber.org/zap"
)

// tokenState is the cached JWT-SVID of one JWTFile of the output's formats.
type tokenState struct {
	svid      *jwtsvid.SVID
	refreshAt time.Time
	err       error // the last fetch failed; cleared by the next success
}

// refreshTokens fetches the JWT-SVIDs that are due, before the build that
// uses them. JWT-SVIDs are minted on request, not pushed: refetch on every
// X.509 push (a new registration or CA shows there first), when a token
// reaches half its lifetime, and after a failed fetch. Called with syncMu
// held.
func (r *outputRunner) refreshTokens(ctx context.Context, x *workloadapi.X509Context) {
	if r.out.wantsX509() && x == nil {
		return // the build waits for the Workload API anyway
	}
	// Only a change of a context the tokens were fetched under is a
	// reason to mint new ones: a JWT-only output's first write may come
	// before the first X.509 context arrives (the streams race), and that
	// arrival, or a push repeating the same context, would otherwise
	// rewrite fresh tokens for nothing.
	x509Pushed := r.lastX509 != nil && x != r.lastX509 && !sameX509(x, r.lastX509)
	now := time.Now()
	for i := range r.jwt {
		t := &r.tokens[i]
		if x509Pushed || t.svid == nil || t.err != nil || !now.Before(t.refreshAt) {
			r.fetchJWT(ctx, i)
		}
	}
}

// fetchJWT refreshes token i and re-arms its refresh timer.
func (r *outputRunner) fetchJWT(ctx context.Context, i int) {
	jf := r.jwt[i]
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
		same := t.svid != nil && t.svid.Marshal() == sv.Marshal()
		t.svid, t.err = sv, nil
		var cached bool
		t.refreshAt, cached = jwtRefreshAt(sv, fetched, r.m.cfg.expiryWindow, r.m.cfg.minJWTRefresh)
		refreshAt = t.refreshAt
		if cached {
			r.log.Debug("the Workload API answered a JWT-SVID past half its lifetime (its cache renews with jitter); asking again later",
				zap.String("file", jf.File), zap.Bool("same_token", same),
				zap.Time("expiry", sv.Expiry), zap.Time("next_fetch", refreshAt))
		}
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

// jwtRefreshAt is when the token sv, fetched at fetched, should be
// replaced: at half of its lifetime (iat..exp), like SPIRE does for SVIDs,
// so a fetch failure leaves the other half to recover in.
//
// A token already past half its lifetime (cached) is one SPIRE's agent
// still serves from its cache: it renews a JWT-SVID only once less than
// half its lifetime ±10% jitter is left, so asking at exactly half gets
// the held token back about half of the time. Asking again every floor
// (a second) until it renews would be up to 180 requests for a 1h token;
// asking every fortieth of the lifetime covers the ±5% jitter window in
// at most three requests, whatever the lifetime. The retry is never
// later than the moment the held token becomes overdue (ExpiryOf with
// window), so a renewal is always sought before status would warn.
func jwtRefreshAt(sv *jwtsvid.SVID, fetched time.Time, window, floor time.Duration) (at time.Time, cached bool) {
	start := fetched
	if iat, ok := numericClaim(sv.Claims["iat"]); ok && iat.Before(sv.Expiry) && iat.Before(fetched.Add(time.Minute)) {
		start = iat
	}
	lifetime := sv.Expiry.Sub(start)
	// Wall-clock instants are turned into durations from fetched so the
	// timer runs on the monotonic clock.
	d := start.Add(lifetime / 2).Sub(fetched)
	if d <= 0 {
		cached = true
		d = lifetime / 40
		overdue := sv.Expiry.Add(-effectiveWindow(start, sv.Expiry, window)).Sub(fetched)
		if overdue > 0 && overdue < d {
			d = overdue
		}
	}
	return fetched.Add(max(d, floor)), cached
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

// sameX509 reports whether a and b hold the same SVIDs (ID and
// certificate) and the same bundles: the things whose change means a
// token may be minted differently now (a new registration, a new CA).
func sameX509(a, b *workloadapi.X509Context) bool {
	if a == nil || b == nil || len(a.SVIDs) != len(b.SVIDs) || a.Bundles.Len() != b.Bundles.Len() {
		return false
	}
	for i := range a.SVIDs {
		sa, sb := a.SVIDs[i], b.SVIDs[i]
		if sa.ID != sb.ID || sa.Hint != sb.Hint || len(sa.Certificates) == 0 || len(sb.Certificates) == 0 ||
			!sa.Certificates[0].Equal(sb.Certificates[0]) {
			return false
		}
	}
	for _, ba := range a.Bundles.Bundles() {
		bb, ok := b.Bundles.Get(ba.TrustDomain())
		if !ok || !ba.Equal(bb) {
			return false
		}
	}
	return true
}
