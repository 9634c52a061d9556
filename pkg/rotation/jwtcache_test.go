package rotation

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

// cachingJWTSource answers JWT-SVID requests the way SPIRE's agent does at
// the far end of its jitter: the token it minted is answered again until
// 55% of its lifetime has passed (half-life +10%), then a new one.
type cachingJWTSource struct {
	fakeSource
	t        *testing.T
	ca       *svidtest.CA
	lifetime time.Duration

	jmu      sync.Mutex
	token    string
	renewAt  time.Time
	requests int
}

func (c *cachingJWTSource) FetchJWTSVID(_ context.Context, _ svid.Selector, audience []string) (*jwtsvid.SVID, error) {
	c.jmu.Lock()
	defer c.jmu.Unlock()
	c.requests++
	now := time.Now()
	if c.token == "" || !now.Before(c.renewAt) {
		tok, err := c.ca.IssueJWTSVID(td.ID(), audience, c.lifetime)
		if err != nil {
			return nil, err
		}
		c.token = tok
		iat := now.Truncate(time.Second) // the token's iat, in whole seconds
		c.renewAt = iat.Add(c.lifetime * 55 / 100)
	}
	return jwtsvid.ParseInsecure(c.token, audience)
}

func (c *cachingJWTSource) counts() (string, int) {
	c.jmu.Lock()
	defer c.jmu.Unlock()
	return c.token, c.requests
}

// TestJWTHeldTokenIsNotAskedForEverySecond: when the Workload API answers
// the token already held at half-life (SPIRE's agent does so about half of
// the time, its renewal point being jittered ±10%), the agent asks again
// after a fortieth of the lifetime, not at its one-second floor. Scaled
// down: an 8s token and a 10ms floor stand for a 1h token and 1s; before
// the backoff it took ~40 requests to get the renewed token (~180 for a
// real 1h token), now at most three.
func TestJWTHeldTokenIsNotAskedForEverySecond(t *testing.T) {
	ca := newTestCA(t)
	jca, err := svidtest.NewCA(td)
	require.NoError(t, err)
	now := time.Now()
	src := &cachingJWTSource{
		fakeSource: fakeSource{x509: ca.context(ca.issue(t, "/web", 11, now.Add(-time.Minute), now.Add(time.Hour)))},
		t:          t, ca: jca, lifetime: 8 * time.Second,
	}
	dir := filepath.Join(t.TempDir(), "out")
	m, err := NewManager(src, []Output{{Name: "web", Dir: dir, Formats: []Format{&PEM{CertFile: "cert.pem"}, &JWT{Tokens: []JWTFile{{Audience: []string{"db"}, File: "db.jwt"}}}}}},
		WithLogger(testLogger(t)), WithDebounce(0), withMinJWTRefresh(10*time.Millisecond))
	require.NoError(t, err)
	runManager(t, m)

	tokenPath := filepath.Join(dir, "db.jwt")
	require.Eventually(t, func() bool { _, err := os.Stat(tokenPath); return err == nil }, waitFor, tick)
	first, initial := src.counts()
	require.Equal(t, 1, initial)
	require.Equal(t, first+"\n", string(mustRead(t, tokenPath)))

	require.Eventually(t, func() bool { return string(mustRead(t, tokenPath)) != first+"\n" }, waitFor, tick,
		"the token must be renewed once the cache lets go of it")
	renewed, n := src.counts()
	require.Equal(t, renewed+"\n", string(mustRead(t, tokenPath)))
	// At half-life, half-life+1/40 and half-life+2/40 (the cache's 55%).
	require.LessOrEqual(t, n-initial, 3, "requests from half-life until the renewed token")
	require.GreaterOrEqual(t, n-initial, 2, "the cache answered the held token at half-life at least once")
	st := outputState(m, "web")
	require.Empty(t, st.JWT[0].LastError)
	require.True(t, st.JWT[0].NextFetch.After(time.Now().Add(2*time.Second)), "the renewed token is next fetched at its own half-life")
}

// TestJWTRefreshRequestsAcrossSPIREJitter replays, on a virtual clock, the
// requests one refresh costs against SPIRE's cache (same token until less
// than half the lifetime ±10% is left, drawn anew per request) for real
// lifetimes: at most 1 + (10% jitter window / (lifetime/40)) = 3.
func TestJWTRefreshRequestsAcrossSPIREJitter(t *testing.T) {
	for _, lifetime := range []time.Duration{time.Minute, 5 * time.Minute, time.Hour, 24 * time.Hour} {
		worst := 0
		for range 2000 {
			iat := time.Unix(1_800_000_000, 0)
			exp := iat.Add(lifetime)
			sv := &jwtsvid.SVID{Expiry: exp, Claims: map[string]any{"iat": float64(iat.Unix())}}
			at, cached := jwtRefreshAt(sv, iat.Add(300*time.Millisecond), 0, minJWTRefresh)
			require.False(t, cached)
			requests := 0
			for {
				requests++
				half := lifetime / 2
				jitter := half - half/10 + rand.N(half/5) //nolint:gosec // jitter, not a secret
				if exp.Sub(at) <= jitter {
					break // SPIRE renews
				}
				next, cached := jwtRefreshAt(sv, at, 0, minJWTRefresh)
				require.True(t, cached)
				require.True(t, next.After(at))
				require.True(t, next.Before(exp.Add(-lifetime/3)), "asks again before the held token is overdue")
				at = next
			}
			worst = max(worst, requests)
		}
		t.Logf("lifetime %s: at most %d requests per refresh", lifetime, worst)
		require.LessOrEqual(t, worst, 3, "lifetime %s", lifetime)
	}
}

// TestJWTRefreshNeverPastOverdue: with an expiry window that makes the held
// token overdue sooner than a fortieth of its lifetime, the retry comes at
// that point, not after it.
func TestJWTRefreshNeverPastOverdue(t *testing.T) {
	iat := time.Unix(1_800_000_000, 0)
	exp := iat.Add(time.Hour)
	sv := &jwtsvid.SVID{Expiry: exp, Claims: map[string]any{"iat": float64(iat.Unix())}}
	fetched := exp.Add(-29 * time.Minute) // past half-life, 1m before the 28m window
	at, cached := jwtRefreshAt(sv, fetched, 28*time.Minute, time.Second)
	require.True(t, cached)
	require.Equal(t, exp.Add(-28*time.Minute), at)
	// Already overdue: keep asking at the backoff, not at the floor.
	at, _ = jwtRefreshAt(sv, exp.Add(-10*time.Minute), 28*time.Minute, time.Second)
	require.Equal(t, exp.Add(-10*time.Minute+90*time.Second), at)
}
