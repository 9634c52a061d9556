package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/zap"

	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

func newDevCmd() *cobra.Command {
	var (
		socket, trustDomain  string
		ids, dns, federate   []string
		ttl, jwtTTL, caDelay time.Duration
		immediateCA          bool
	)
	cmd := &cobra.Command{
		Use:   "dev [--socket PATH] [--trust-domain TD] [--spiffe-id ID[#hint]]... [--ttl 1m]",
		Short: "Serve a development Workload API with an in-process CA (never for production)",
		Long: `Serve the SPIFFE Workload API on a unix socket with an in-process CA, for
development, demos and tests. Every caller gets every configured identity.
SVIDs are re-issued and pushed at half of --ttl.

  SIGHUP   rotate the CA as SPIRE does: the next root is published in the
           bundle at once and signs (SVIDs re-issued) --ca-activation-delay
           later; the old root stays in the bundle while its SVIDs are valid
  SIGUSR1  issue and push new SVIDs now
  SIGINT/SIGTERM stop

--unsafe-immediate-ca-switch makes SIGHUP sign with the new root in the same
push that publishes it, which no SPIRE server does: peers that have not
received the new root yet reject the new SVIDs. For hostile tests only.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, d := range []struct {
				flag string
				v    time.Duration
			}{{"--ttl", ttl}, {"--jwt-ttl", jwtTTL}} {
				if d.v <= 0 {
					return withCode(exitUsage, fmt.Errorf("%s %s: must be positive", d.flag, d.v))
				}
			}
			if caDelay < 0 {
				return withCode(exitUsage, fmt.Errorf("--ca-activation-delay %s: must not be negative", caDelay))
			}
			if caDelay == 0 {
				caDelay = ttl / 3
			}
			if immediateCA && cmd.Flags().Changed("ca-activation-delay") {
				return withCode(exitUsage, errors.New("--ca-activation-delay and --unsafe-immediate-ca-switch cannot be combined"))
			}
			td, err := spiffeid.TrustDomainFromString(trustDomain)
			if err != nil {
				return withCode(exitUsage, fmt.Errorf("--trust-domain %q: %w", trustDomain, err))
			}
			idents, err := parseIdentities(ids, dns)
			if err != nil {
				return withCode(exitUsage, err)
			}
			var feds []spiffeid.TrustDomain
			for _, f := range federate {
				ftd, err := spiffeid.TrustDomainFromString(f)
				if err != nil {
					return withCode(exitUsage, fmt.Errorf("--federate-with %q: %w", f, err))
				}
				feds = append(feds, ftd)
			}
			log, err := newLogger(config.Log{Level: "info", Format: "console"}, cmd.ErrOrStderr())
			if err != nil {
				return withCode(exitFailure, err)
			}
			srv, err := svidtest.New(svidtest.Config{TrustDomain: td, Identities: idents, TTL: ttl, JWTTTL: jwtTTL,
				CAActivationDelay: caDelay, UnsafeImmediateCASwitch: immediateCA, Federated: feds, Logger: log})
			if err != nil {
				return withCode(exitUsage, devError(err))
			}
			if err := srv.Start(socket); err != nil {
				return withCode(exitFailure, devError(err))
			}
			defer srv.Stop()
			log.Info("export " + config.EnvEndpointSocket + "=" + srv.Addr())
			sigs := make(chan os.Signal, 4)
			signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGINT, syscall.SIGTERM)
			defer signal.Stop(sigs)
			for {
				select {
				case <-cmd.Context().Done():
					return nil
				case s := <-sigs:
					switch s {
					case syscall.SIGHUP:
						if err := srv.RotateCA(); err != nil {
							log.Error("CA rotation failed", zap.Error(err))
						}
					case syscall.SIGUSR1:
						if err := srv.RotateSVIDs(); err != nil {
							log.Error("SVID rotation failed", zap.Error(err))
						}
					default:
						log.Info("stopping", zap.String("signal", s.String()))
						return nil
					}
				}
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&socket, "socket", "/tmp/identity-agent-dev/agent.sock", "unix socket to serve the Workload API on")
	f.StringVar(&trustDomain, "trust-domain", "example.org", "trust domain of the dev CA")
	f.StringArrayVar(&ids, "spiffe-id", nil, "identity to issue, ID[#hint] (repeatable; default spiffe://TD/workload)")
	f.StringArrayVar(&dns, "dns", nil, "DNS SAN added to every SVID, e.g. localhost (repeatable)")
	f.StringArrayVar(&federate, "federate-with", nil, "serve a federated bundle for this trust domain (repeatable)")
	f.DurationVar(&ttl, "ttl", svidtest.DefaultTTL, "X.509-SVID lifetime; rotated at half of it")
	f.DurationVar(&jwtTTL, "jwt-ttl", svidtest.DefaultJWTTTL, "JWT-SVID lifetime")
	f.DurationVar(&caDelay, "ca-activation-delay", 0, "on SIGHUP, how long the next root is in the bundle before it signs (default a third of --ttl)")
	f.BoolVar(&immediateCA, "unsafe-immediate-ca-switch", false, "on SIGHUP, sign with the new root at once (hostile tests only)")
	return cmd
}

// parseIdentities reads "spiffe://td/path#hint" flags.
func parseIdentities(flags, dns []string) ([]svidtest.Identity, error) {
	var out []svidtest.Identity
	for _, f := range flags {
		idStr, hint, _ := strings.Cut(f, "#")
		id, err := spiffeid.FromString(idStr)
		if err != nil {
			return nil, fmt.Errorf("--spiffe-id %q: %w", f, err)
		}
		out = append(out, svidtest.Identity{ID: id, Hint: hint, DNSNames: dns})
	}
	if len(out) == 0 && len(dns) > 0 {
		return nil, errors.New("--dns needs at least one --spiffe-id")
	}
	return out, nil
}

// devError says an error of the dev Workload API in the command's words:
// "dev: ...", not the library's package name ("svidtest: ...").
func devError(err error) error {
	return fmt.Errorf("dev: %s", strings.TrimPrefix(err.Error(), "svidtest: "))
}
