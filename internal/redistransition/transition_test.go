package redistransition

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/metricstest"
	"github.com/identity-agent/identity-agent/internal/redistest"
	"github.com/identity-agent/identity-agent/pkg/redisclient"
)

func gateByName(gs []Gate, name string) Gate {
	for _, g := range gs {
		if g.Name == name {
			return g
		}
	}
	return Gate{Name: name, Detail: "absent"}
}

func failedGates(err error) []string {
	var ge *GateError
	if !errors.As(err, &ge) {
		return nil
	}
	var out []string
	for _, g := range ge.Failed {
		out = append(out, g.Name)
	}
	return out
}

func TestTransitionWalkAToDAndBack(t *testing.T) {
	e := redistest.NewEnv(t)
	r := redistest.Start(t, e, redistest.Spec{Password: true, ConfFile: true})
	ctx := redistest.Context(t)
	reg := prometheus.NewRegistry()
	admin, err := NewAdmin(adminConfig(r, e))
	require.NoError(t, err)
	defer func() { _ = admin.Close() }()
	state := e.Dir + "/transition.json"
	healthy := true
	tr, err := NewTransition(admin, TransitionConfig{
		StateFile: state, PlainPort: r.Port, TLSPort: r.TLSPort, TLSFiles: TLSFiles(e.Files), PasswordFile: e.PasswordFile,
		Window: 300 * time.Millisecond, TLSAddr: r.TLSAddr(),
		SVIDs: e.Client, Bundles: e.Client, ServerAuthorizer: tlsconfig.AuthorizeID(serverID),
		HealthChecks: []HealthCheck{{Name: "app", Check: func(context.Context) error {
			if !healthy {
				return errors.New("app not ready")
			}
			return nil
		}}},
	}, WithRegisterer(reg))
	require.NoError(t, err)
	sampler, err := NewSampler(admin, SamplerConfig{StateFile: state, PlainPort: r.Port, TLSPort: r.TLSPort, Transition: tr}, WithRegisterer(reg))
	require.NoError(t, err)

	// A: no TLS.
	st, err := tr.Status(ctx, false)
	require.NoError(t, err)
	require.Equal(t, PhaseA, st.Phase)
	require.Equal(t, PhaseB, st.Next)
	assert.True(t, gateByName(st.Gates, GateTLSFiles).OK, gateByName(st.Gates, GateTLSFiles).Detail)
	assert.False(t, gateByName(st.Gates, GateConfirm).OK)
	_, err = tr.Advance(ctx, false)
	require.Error(t, err)
	assert.Equal(t, []string{GateConfirm}, failedGates(err))
	assert.Contains(t, err.Error(), "refusing A→B: gate confirm: pending: pass --confirm")

	// A → B: TLS port opens with the agent's files; password kept.
	res, err := tr.Advance(ctx, true)
	require.NoError(t, err)
	assert.Equal(t, PhaseB, res.To)
	assert.True(t, res.Rewrote, "server runs from a config file: CONFIG REWRITE expected")
	conf, err := os.ReadFile(r.Conf)
	require.NoError(t, err)
	assert.Contains(t, string(conf), "tls-port "+strconv.Itoa(r.TLSPort))
	_, err = redisclient.PingTLS(ctx, r.TLSAddr(), e.Client, e.Client, tlsconfig.AuthorizeID(serverID), "")
	require.ErrorContains(t, err, "NOAUTH", "password still required in B, on TLS too")

	// A dual_auth workload on TLS, and a legacy client on plaintext.
	dual, err := redisclient.New(redisclient.ModeDualAuth, redisclient.WithTLS(r.TLSAddr(), e.Client, e.Client, tlsconfig.AuthorizeID(serverID)),
		redisclient.WithPlaintext(r.PlainAddr()), redisclient.WithPasswordFile(e.PasswordFile))
	require.NoError(t, err)
	defer func() { _ = dual.Close() }()
	require.NoError(t, dual.Redis().Ping(ctx).Err())
	legacy := redis.NewClient(&redis.Options{Addr: r.PlainAddr(), Password: testPassword, PoolSize: 1})
	defer func() { _ = legacy.Close() }()
	require.NoError(t, legacy.Ping(ctx).Err())

	// B → C gated by health checks.
	healthy = false
	_, err = tr.Advance(ctx, true)
	require.Error(t, err)
	assert.Equal(t, []string{GateHealthChecks}, failedGates(err))
	assert.Contains(t, err.Error(), "app not ready")
	healthy = true
	res, err = tr.Advance(ctx, true)
	require.NoError(t, err)
	assert.Equal(t, PhaseC, res.To)
	assert.Empty(t, res.Set, "C is a milestone, not a server change")
	st, err = tr.Status(ctx, true)
	require.NoError(t, err)
	require.Equal(t, PhaseC, st.Phase)
	assert.Equal(t, 1, st.Connections.Plaintext)
	assert.GreaterOrEqual(t, st.Connections.TLS, 1)

	// C → D refused while the legacy client is connected.
	c, err := sampler.SampleOnce(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, c.Plaintext)
	_, err = tr.Advance(ctx, true)
	require.Error(t, err)
	assert.ElementsMatch(t, []string{GatePlaintextNow, GatePlaintextWindow}, failedGates(err))
	assert.Contains(t, err.Error(), "gate plaintext-now: 1 connection(s) on plaintext port "+strconv.Itoa(r.Port))
	t.Logf("refusal: %v", err)
	assert.Equal(t, 1.0, metricstest.Value(t, reg, "identity_agent_redis_connections", map[string]string{"port": "plaintext"}))
	assert.Equal(t, 0.0, metricstest.Value(t, reg, "identity_agent_redis_transition_gate", map[string]string{"gate": GatePlaintextNow}))

	// The legacy client leaves; the sampler must then see a clean window.
	require.NoError(t, legacy.Close())
	require.Eventually(t, func() bool {
		if _, err := sampler.SampleOnce(ctx); err != nil {
			return false
		}
		st, err := tr.Status(ctx, true)
		return err == nil && st.Ready()
	}, 20*time.Second, 100*time.Millisecond)

	// C → D.
	res, err = tr.Advance(ctx, true)
	require.NoError(t, err)
	assert.Equal(t, PhaseD, res.To)
	assert.ElementsMatch(t, []string{"tls-auth-clients", "requirepass", "port"}, res.Set)
	st, err = tr.Status(ctx, true)
	require.NoError(t, err)
	assert.Equal(t, PhaseD, st.Phase)
	assert.Equal(t, "0", st.Server.Port)
	assert.False(t, st.Server.PasswordSet)
	assert.Empty(t, st.Next)
	closed := redis.NewClient(&redis.Options{Addr: r.PlainAddr(), Password: testPassword, MaxRetries: -1})
	require.Error(t, closed.Ping(ctx).Err(), "plaintext port must be closed in D")
	require.NoError(t, closed.Close())
	tlsOnly, err := redisclient.New(redisclient.ModeTLSOnly, redisclient.WithTLS(r.TLSAddr(), e.Client, e.Client, tlsconfig.AuthorizeID(serverID)))
	require.NoError(t, err)
	defer func() { _ = tlsOnly.Close() }()
	require.NoError(t, tlsOnly.Redis().Ping(ctx).Err(), "tls_only without password works in D")
	require.NoError(t, dual.Redis().Ping(ctx).Err(), "dual_auth keeps working in D")
	_, err = redisclient.PingTLS(ctx, r.TLSAddr(), e.Client, e.Client, tlsconfig.AuthorizeID(serverID), e.PasswordFile)
	require.NoError(t, err, "a new TLS connection that still sends the password (AUTH default <pw>) works in D")
	_, err = tr.Advance(ctx, true)
	require.ErrorContains(t, err, "already in phase D")
	conf, err = os.ReadFile(r.Conf)
	require.NoError(t, err)
	assert.Regexp(t, `(?m)^port 0$`, string(conf))
	assert.NotContains(t, string(conf), testPassword)

	// Rollback all the way; each step well under a minute.
	_, err = tr.Rollback(ctx, false)
	assert.Equal(t, []string{GateConfirm}, failedGates(err))
	start := time.Now()
	res, err = tr.Rollback(ctx, true)
	require.NoError(t, err)
	took := time.Since(start)
	assert.Less(t, took, time.Minute)
	t.Logf("rollback D→C took %s", took)
	assert.Equal(t, PhaseC, res.To)
	plain := redis.NewClient(&redis.Options{Addr: r.PlainAddr(), Password: testPassword, MaxRetries: -1})
	defer func() { _ = plain.Close() }()
	require.NoError(t, plain.Ping(ctx).Err(), "plaintext back with the password")
	noPW := redis.NewClient(&redis.Options{Addr: r.PlainAddr(), MaxRetries: -1})
	defer func() { _ = noPW.Close() }()
	require.ErrorContains(t, noPW.Ping(ctx).Err(), "NOAUTH", "requirepass restored from the password file")
	st, err = tr.Status(ctx, true)
	require.NoError(t, err)
	assert.Equal(t, PhaseC, st.Phase)

	res, err = tr.Rollback(ctx, true)
	require.NoError(t, err)
	assert.Equal(t, PhaseB, res.To)
	res, err = tr.Rollback(ctx, true)
	require.NoError(t, err)
	assert.Equal(t, PhaseA, res.To)
	st, err = tr.Status(ctx, true)
	require.NoError(t, err)
	assert.Equal(t, PhaseA, st.Phase)
	assert.Equal(t, "0", st.Server.TLSPort)
	_, err = tr.Rollback(ctx, true)
	require.ErrorContains(t, err, "already in phase A")
	saved, err := LoadState(state)
	require.NoError(t, err)
	assert.Empty(t, saved.History)
	raw, err := os.ReadFile(state)
	require.NoError(t, err)
	assert.NotContains(t, string(raw), testPassword, "state file never holds the password")
	fi, err := os.Stat(state)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
}

func TestSamplerWindowSurvivesRestartNotGaps(t *testing.T) {
	e := redistest.NewEnv(t)
	r := redistest.Start(t, e, redistest.Spec{Password: true, TLS: true})
	ctx := redistest.Context(t)
	admin := NewAdminMust(t, r, e)
	state := e.Dir + "/s.json"
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	mk := func() *Sampler {
		s, err := NewSampler(admin, SamplerConfig{StateFile: state, PlainPort: r.Port, TLSPort: r.TLSPort, MaxGap: 10 * time.Minute}, withClock(clock))
		require.NoError(t, err)
		return s
	}
	s1 := mk()
	_, err := s1.SampleOnce(ctx)
	require.NoError(t, err)
	st, _ := LoadState(state)
	require.Equal(t, now, st.Sample.PlaintextZeroSince)

	// Agent restarts five minutes later: a new Sampler keeps the window.
	now = now.Add(5 * time.Minute)
	_, err = mk().SampleOnce(ctx)
	require.NoError(t, err)
	st, _ = LoadState(state)
	assert.Equal(t, now.Add(-5*time.Minute), st.Sample.PlaintextZeroSince)

	// Down for an hour: nobody watched, the window restarts.
	now = now.Add(time.Hour)
	_, err = mk().SampleOnce(ctx)
	require.NoError(t, err)
	st, _ = LoadState(state)
	assert.Equal(t, now, st.Sample.PlaintextZeroSince)

	// A plaintext client resets it.
	p := redis.NewClient(&redis.Options{Addr: r.PlainAddr(), Password: testPassword, PoolSize: 1})
	defer func() { _ = p.Close() }()
	require.NoError(t, p.Ping(ctx).Err())
	now = now.Add(time.Minute)
	c, err := mk().SampleOnce(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, c.Plaintext)
	assert.Len(t, c.PlaintextClients, 1)
	st, _ = LoadState(state)
	assert.True(t, st.Sample.PlaintextZeroSince.IsZero())
	assert.Equal(t, now, st.Sample.LastPlaintextSeen)

	// Run stops with its context.
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mk().Run(rctx) }()
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Sampler.Run did not stop")
	}
}

func TestServerConfigStartsRedis(t *testing.T) {
	e := redistest.NewEnv(t)
	ctx := redistest.Context(t)
	for _, ph := range []Phase{PhaseB, PhaseD} {
		t.Run(string(ph), func(t *testing.T) {
			dir := redistest.ShortDir(t)
			plain, tlsPort := redistest.FreePort(t), redistest.FreePort(t)
			block, err := ServerConfig(ph, ServerConfigOptions{PlainPort: plain, TLSPort: tlsPort, TLSFiles: TLSFiles(e.Files)})
			require.NoError(t, err)
			assert.NotContains(t, block, testPassword)
			base := "bind 127.0.0.1\nsave \"\"\nappendonly no\ndir " + dir + "\nrequirepass " + testPassword + "\n"
			conf := dir + "/redis.conf"
			require.NoError(t, os.WriteFile(conf, []byte(base+block), 0o600))
			cmd := startRaw(t, conf)
			_ = cmd
			tlsAddr := "127.0.0.1:" + strconv.Itoa(tlsPort)
			pw := e.PasswordFile
			var err2 error
			require.Eventually(t, func() bool {
				_, err2 = redisclient.PingTLS(ctx, tlsAddr, e.Client, e.Client, tlsconfig.AuthorizeID(serverID), pw)
				return err2 == nil
			}, 20*time.Second, 50*time.Millisecond, "TLS PING on generated config: %v", err2)
			pc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(plain), Password: testPassword, MaxRetries: -1})
			defer func() { _ = pc.Close() }()
			if ph == PhaseB {
				require.NoError(t, pc.Ping(ctx).Err())
			} else {
				require.Error(t, pc.Ping(ctx).Err())
				// D clears requirepass: no password needed on TLS.
				_, err := redisclient.PingTLS(ctx, tlsAddr, e.Client, e.Client, tlsconfig.AuthorizeID(serverID), "")
				require.NoError(t, err)
			}
		})
	}
	_, err := ServerConfig(PhaseB, ServerConfigOptions{})
	require.ErrorContains(t, err, "cert_file")
	_, err = ServerConfig("E", ServerConfigOptions{})
	require.ErrorContains(t, err, `phase "E"`)
}

func startRaw(t *testing.T, conf string) *redistest.Proc {
	t.Helper()
	r := &redistest.Proc{Conf: conf}
	r.Cmd = redistest.Exec(t, conf)
	return r
}

// TestExampleConfigsMatchGenerator keeps examples/redis in sync with ServerConfig.
func TestExampleConfigsMatchGenerator(t *testing.T) {
	files := TLSFiles{CertFile: "/etc/identity-agent/certs/redis/svid.pem", KeyFile: "/etc/identity-agent/certs/redis/key.pem", CAFile: "/etc/identity-agent/certs/redis/bundle.pem"}
	for _, ph := range []Phase{PhaseB, PhaseD} {
		b, err := os.ReadFile("../../examples/redis/redis-phase-" + string(ph) + ".conf")
		require.NoError(t, err)
		block, err := ServerConfig(ph, ServerConfigOptions{TLSFiles: files})
		require.NoError(t, err)
		assert.True(t, strings.HasSuffix(string(b), block), "examples/redis/redis-phase-%s.conf must end with ServerConfig's block:\n%s", ph, block)
	}
}

// TestExampleConfigsStartRedis runs redis-server with examples/redis's
// configs (paths and ports swapped for the test's) and PINGs over mTLS.
func TestExampleConfigsStartRedis(t *testing.T) {
	e := redistest.NewEnv(t)
	ctx := redistest.Context(t)
	for _, ph := range []string{"B", "D"} {
		t.Run(ph, func(t *testing.T) {
			b, err := os.ReadFile("../../examples/redis/redis-phase-" + ph + ".conf")
			require.NoError(t, err)
			dir := redistest.ShortDir(t)
			plain, tlsPort := redistest.FreePort(t), redistest.FreePort(t)
			conf := strings.NewReplacer(
				"/etc/identity-agent/certs/redis/svid.pem", e.Files.CertFile,
				"/etc/identity-agent/certs/redis/key.pem", e.Files.KeyFile,
				"/etc/identity-agent/certs/redis/bundle.pem", e.Files.CAFile,
				"/run/redis/redis.sock", dir+"/redis.sock",
				"dir /var/lib/redis", "dir "+dir,
				"bind 0.0.0.0", "bind 127.0.0.1",
				"\nport 6379\n", "\nport "+strconv.Itoa(plain)+"\n",
				"tls-port 6380", "tls-port "+strconv.Itoa(tlsPort),
				"CHANGE-ME", testPassword,
			).Replace(string(b))
			path := dir + "/redis.conf"
			require.NoError(t, os.WriteFile(path, []byte(conf), 0o600))
			redistest.Exec(t, path)
			tlsAddr := "127.0.0.1:" + strconv.Itoa(tlsPort)
			pw := ""
			if ph == "B" {
				pw = e.PasswordFile
			}
			var perr error
			require.Eventually(t, func() bool {
				_, perr = redisclient.PingTLS(ctx, tlsAddr, e.Client, e.Client, tlsconfig.AuthorizeID(serverID), pw)
				return perr == nil
			}, 20*time.Second, 50*time.Millisecond, "mTLS PING: %v", perr)
			pc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(plain), Password: testPassword, MaxRetries: -1})
			defer func() { _ = pc.Close() }()
			if ph == "B" {
				require.NoError(t, pc.Ping(ctx).Err())
			} else {
				require.Error(t, pc.Ping(ctx).Err())
			}
		})
	}
}

// TestAdvancePersistsAcrossRedisRestart: CONFIG REWRITE makes phase B
// survive a redis-server restart from its config file.
func TestAdvancePersistsAcrossRedisRestart(t *testing.T) {
	e := redistest.NewEnv(t)
	r := redistest.Start(t, e, redistest.Spec{Password: true, ConfFile: true})
	ctx := redistest.Context(t)
	admin := NewAdminMust(t, r, e)
	tr, err := NewTransition(admin, TransitionConfig{StateFile: e.Dir + "/t.json", PlainPort: r.Port, TLSPort: r.TLSPort,
		TLSFiles: TLSFiles(e.Files), PasswordFile: e.PasswordFile})
	require.NoError(t, err)
	res, err := tr.Advance(ctx, true)
	require.NoError(t, err)
	require.True(t, res.Rewrote)

	require.NoError(t, r.Cmd.Process.Kill())
	_, _ = r.Cmd.Process.Wait()
	redistest.Exec(t, r.Conf)
	var perr error
	require.Eventually(t, func() bool {
		_, perr = redisclient.PingTLS(ctx, r.TLSAddr(), e.Client, e.Client, tlsconfig.AuthorizeID(serverID), e.PasswordFile)
		return perr == nil
	}, 20*time.Second, 50*time.Millisecond, "TLS after restart: %v", perr)
	st, err := tr.Status(ctx, false)
	require.NoError(t, err)
	assert.Equal(t, PhaseB, st.Phase)
	assert.Equal(t, "yes", st.Server.TLSAuthClients)
}
