package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/identity-agent/identity-agent/internal/agent"
	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

func newProxyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "proxy server|client",
		Short: "Run one mTLS proxy without a config file",
		Long: `server: accept mTLS on --listen, authorize the client's SPIFFE ID against
--allow, forward plaintext to --target (loopback or unix socket).
client: accept plaintext on --listen (loopback or unix socket), dial --target
over mTLS and authorize the server's SPIFFE ID against --allow.

--allow forms: spiffe://td/path (exact), spiffe://td (any ID in the trust
domain), spiffe://td/prefix/* (path prefix). Repeat it for several.`,
	}
	cmd.AddCommand(proxyModeCmd(tlsproxy.ModeServer), proxyModeCmd(tlsproxy.ModeClient))
	return cmd
}

func proxyModeCmd(mode tlsproxy.Mode) *cobra.Command {
	var (
		pc       config.Proxy
		api      string
		logLevel string
	)
	cmd := &cobra.Command{
		Use:   string(mode) + " --listen ADDR --target ADDR --allow SPIFFE_ID [...]",
		Short: fmt.Sprintf("Run a %s-mode mTLS proxy", mode),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pc.Name, pc.Mode = string(mode), string(mode)
			if api == "" {
				api = os.Getenv(config.EnvEndpointSocket)
			}
			if api == "" {
				return withCode(exitUsage, errors.New("--workload-api is required (or set "+config.EnvEndpointSocket+")"))
			}
			if len(pc.Allow) == 0 {
				return withCode(exitUsage, errors.New("--allow is required: list the peer SPIFFE IDs to accept (there is no allow-anyone)"))
			}
			log, err := newLogger(config.Log{Level: logLevel, Format: "json"}, cmd.ErrOrStderr())
			if err != nil {
				return withCode(exitUsage, err)
			}
			defer func() { _ = log.Sync() }()
			src := svid.NewSource(svid.WithAddr(api), svid.WithLogger(log.Named("workloadapi")))
			p, err := agent.NewProxy(pc, src, tlsproxy.WithLogger(log))
			if err != nil {
				return withCode(exitUsage, proxyFlagError(mode, err))
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			if err := src.Start(ctx); err != nil {
				return withCode(exitUsage, fmt.Errorf("workload API %s: %w", api, err))
			}
			defer func() { _ = src.Close() }()
			if err := src.WaitReady(ctx); err != nil {
				return nil // interrupted before the first SVID
			}
			if err := p.Start(ctx); err != nil {
				return withCode(exitFailure, err)
			}
			log.Info("proxy ready", zap.String("mode", string(mode)), zap.Stringer("listen", p.Addr()), zap.String("target", pc.Target))
			<-ctx.Done()
			drain := time.Duration(pc.DrainTimeout)
			if drain == 0 {
				drain = tlsproxy.DefaultDrainTimeout
			}
			dctx, cancel := context.WithTimeout(context.Background(), drain)
			defer cancel()
			return withCode(exitFailure, p.Shutdown(dctx))
		},
	}
	f := cmd.Flags()
	f.StringVar(&api, "workload-api", "", "Workload API address, unix:///path (default $"+config.EnvEndpointSocket+")")
	f.StringVar(&pc.Listen, "listen", "", "address to accept on: host:port or unix:///path")
	f.StringVar(&pc.Target, "target", "", "address to forward to: host:port or unix:///path")
	f.StringArrayVar(&pc.Allow, "allow", nil, "peer SPIFFE ID, trust domain or prefix to accept (repeatable)")
	f.StringVar(&pc.SpiffeID, "spiffe-id", "", "which of this workload's SVIDs to present (default: the first)")
	f.StringVar(&pc.Hint, "hint", "", "pick the SVID to present by its Workload API hint")
	f.IntVar(&pc.MaxConns, "max-conns", 0, fmt.Sprintf("concurrent authenticated connections (default %d)", tlsproxy.DefaultMaxConns))
	f.IntVar(&pc.MaxHandshakes, "max-handshakes", 0, fmt.Sprintf("concurrent connections still in the TLS handshake; when full the oldest idle one is closed (default %d)", tlsproxy.DefaultMaxHandshakes))
	f.IntVar(&pc.MaxHandshakesPerSource, "max-handshakes-per-source", 0, fmt.Sprintf("handshakes per source address (IPv6: per /64) (default %d)", tlsproxy.DefaultMaxHandshakesPerSource))
	f.Var(durationFlag{&pc.HandshakeTimeout}, "handshake-timeout", "TLS handshake limit (default "+tlsproxy.DefaultHandshakeTimeout.String()+")")
	f.Var(durationFlag{&pc.IdleTimeout}, "idle-timeout", "close after this long without traffic (default 5m)")
	f.Var(durationFlag{&pc.ConnectTimeout}, "connect-timeout", "target dial limit (default 5s)")
	f.Var(durationFlag{&pc.DrainTimeout}, "drain-timeout", "how long SIGTERM lets connections finish (default 30s)")
	f.Var(durationFlag{&pc.MaxConnLifetime}, "max-conn-lifetime", "close a connection this long after its handshake (default: no limit)")
	f.BoolVar(&pc.UnsafeAllowNonLoopbackPlaintext, "unsafe-allow-non-loopback-plaintext", false, "allow the plaintext side off loopback")
	f.StringVar(&logLevel, "log-level", "info", "debug|info|warn|error")
	if mode == tlsproxy.ModeServer {
		f.BoolVar(&pc.HTTP, "http", false, "HTTP mode: pass the verified client SPIFFE ID in X-Forwarded-Client-Cert")
		f.BoolVar(&pc.RewriteHost, "rewrite-host", false, "HTTP mode: send the target address as Host (Ollama refuses a non-local Host)")
	}
	return cmd
}

// durationFlag lets config.Duration be a pflag value.
type durationFlag struct{ d *config.Duration }

// String is empty for an unset flag: the usage text names the real
// default, which the proxy applies, and pflag then prints no "(default 0s)".
func (f durationFlag) String() string {
	if f.d == nil || *f.d == 0 {
		return ""
	}
	return time.Duration(*f.d).String()
}

func (f durationFlag) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*f.d = config.Duration(v)
	return nil
}

func (durationFlag) Type() string { return "duration" }

// proxyConfigKeys are the config keys of a proxy that have a flag of the
// same name (underscores as dashes) on `proxy server|client`.
var proxyConfigKeys = []string{"listen", "target", "allow", "spiffe_id", "hint", "max_conns",
	"max_handshakes", "max_handshakes_per_source",
	"handshake_timeout", "idle_timeout", "connect_timeout", "drain_timeout", "max_conn_lifetime",
	"unsafe_allow_non_loopback_plaintext", "http", "rewrite_host"}

// proxyFlagError names the flags where the proxy's validation names its
// configuration keys, since the standalone proxy has no configuration
// file: `--target: "10.0.0.1:80": ...` instead of `proxy "server": target: ...`.
func proxyFlagError(mode tlsproxy.Mode, err error) error {
	msg := strings.TrimPrefix(err.Error(), fmt.Sprintf("proxy %q: ", string(mode)))
	for _, key := range proxyConfigKeys {
		flag := "--" + strings.ReplaceAll(key, "_", "-")
		if rest, ok := strings.CutPrefix(msg, key+": "); ok {
			msg = flag + ": " + rest
		} else if rest, ok := strings.CutPrefix(msg, key+"["); ok {
			if _, after, ok := strings.Cut(rest, "]"); ok { // allow[N]: the Nth --allow
				msg = flag + after
			}
		}
		msg = strings.ReplaceAll(msg, "set "+key+" ", "set "+flag+" ")
		msg = strings.ReplaceAll(msg, "needs "+key+": true", "needs "+flag)
	}
	return &flagError{msg: msg, err: err}
}

// flagError is an error reworded for the command line; errors.Is/As still
// see the original.
type flagError struct {
	msg string
	err error
}

func (e *flagError) Error() string { return e.msg }
func (e *flagError) Unwrap() error { return e.err }
