package redisclient_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/identity-agent/identity-agent/pkg/redisclient"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

// A Celery-like worker: it takes jobs from a list with BRPOP and pushes
// results. The mode comes from IDENTITY_AGENT_REDIS_MODE, so the service
// moves from password to dual_auth to tls_only with a restart only; the
// SVID rotates underneath without reconnect logic here.
func ExampleNew_worker() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()

	// The SPIRE agent's (or identity-agent dev's) Workload API socket,
	// $SPIFFE_ENDPOINT_SOCKET; the Source follows its rotations.
	src := svid.NewSource()
	if err := src.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer func() { _ = src.Close() }()
	if err := src.WaitReady(ctx); err != nil {
		log.Fatal(err)
	}
	worker := src.X509SVIDSource(svid.Selector{Hint: "worker"}) // or svid.Selector{} for the only one

	mode, err := redisclient.ModeFromEnv(redisclient.DefaultModeEnv, redisclient.ModeDualAuth)
	if err != nil {
		log.Fatal(err)
	}
	// The server must present exactly this SPIFFE ID on the TLS port.
	authz := tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://example.org/redis"))
	c, err := redisclient.New(mode,
		redisclient.WithTLS("redis.internal:6380", worker, src, authz),
		redisclient.WithPlaintext("redis.internal:6379"), // dual_auth fallback, disabled mode
		redisclient.WithPasswordFile("/etc/worker/redis.pass"),
		redisclient.WithName("worker"),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	rdb := c.Redis()

	for ctx.Err() == nil {
		kv, err := rdb.BRPop(ctx, 5*time.Second, "celery").Result()
		if errors.Is(err, redis.Nil) {
			continue // no job within the timeout
		}
		if err != nil {
			log.Printf("queue: %v", err) // go-redis redials; dual_auth may fall back
			time.Sleep(time.Second)
			continue
		}
		result := fmt.Sprintf("done:%s", kv[1])
		if err := rdb.LPush(ctx, "celery-results", result).Err(); err != nil {
			log.Printf("result: %v", err)
		}
	}
}

// A cache client in tls_only mode (phase D): no password, the SVID is the
// credential; Health tells which path a request took.
func ExampleNew_cache() {
	ctx := context.Background()
	src := svid.NewSource()
	if err := src.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer func() { _ = src.Close() }()
	if err := src.WaitReady(ctx); err != nil {
		log.Fatal(err)
	}

	authz, err := redisclient.ServerAuthorizer("", "example.org") // any server of the trust domain
	if err != nil {
		log.Fatal(err)
	}
	c, err := redisclient.New(redisclient.ModeTLSOnly,
		redisclient.WithTLS("redis.internal:6380", src.X509SVIDSource(svid.Selector{}), src, authz),
		redisclient.WithDB(1),
		redisclient.WithRedisOptions(func(o *redis.Options) { o.PoolSize = 20 }),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = c.Close() }()

	get := func(key string, load func() string) string {
		v, err := c.Redis().Get(ctx, key).Result()
		if err == nil {
			return v
		}
		v = load()
		_ = c.Redis().Set(ctx, key, v, 10*time.Minute).Err()
		return v
	}
	fmt.Println(get("user:42", func() string { return "Ada" }))
	if h, err := c.Health(ctx); err == nil {
		fmt.Println("path:", h.Path)
	}
}

func ExampleModeFromEnv() {
	_ = os.Setenv("EXAMPLE_REDIS_MODE", "dual-auth")
	m, err := redisclient.ModeFromEnv("EXAMPLE_REDIS_MODE", redisclient.ModeDisabled)
	fmt.Println(m, err)
	_ = os.Setenv("EXAMPLE_REDIS_MODE", "mtls")
	_, err = redisclient.ModeFromEnv("EXAMPLE_REDIS_MODE", redisclient.ModeDisabled)
	fmt.Println(err)
	// Output:
	// dual_auth <nil>
	// $EXAMPLE_REDIS_MODE: redis mode "mtls": want one of disabled, dual_auth, tls_only
}

// ServerAuthorizer turns the usual config fields into the authorizer that
// WithTLS takes: an exact SPIFFE ID, or a trust domain (also written as an
// ID without a path). The TLS handshake calls it with the server's ID.
func ExampleServerAuthorizer() {
	redisID := spiffeid.RequireFromString("spiffe://example.org/redis")
	other := spiffeid.RequireFromString("spiffe://example.org/cache")
	for _, cfg := range [][2]string{
		{"spiffe://example.org/redis", ""}, // server_id
		{"spiffe://example.org", ""},       // server_id naming a trust domain
		{"", "example.org"},                // server_trust_domain
	} {
		authz, err := redisclient.ServerAuthorizer(cfg[0], cfg[1])
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(authz(redisID, nil) == nil, authz(other, nil) == nil)
	}
	_, err := redisclient.ServerAuthorizer("", "")
	fmt.Println(err)
	// Output:
	// true false
	// true true
	// true true
	// server_id or server_trust_domain is required to authorize the Redis server
}

// New validates the options a mode needs before anything is dialed.
func ExampleNew() {
	_, err := redisclient.New(redisclient.ModeDualAuth, redisclient.WithPlaintext("127.0.0.1:6379"))
	fmt.Println(err)
	// Output: redis client: password_file (WithPasswordFile) is required in mode dual_auth
}
