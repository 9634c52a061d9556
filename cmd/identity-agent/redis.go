package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/identity-agent/identity-agent/internal/agent"
	"github.com/identity-agent/identity-agent/internal/redistransition"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

func newRedisCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "redis", Short: "Redis over SPIFFE mTLS: server config and the password → mTLS transition"}
	cmd.AddCommand(newRedisConfigCmd(), newRedisTransitionCmd())
	return cmd
}

func newRedisConfigCmd() *cobra.Command {
	var (
		phase, cfgPath                string
		plainPort, tlsPort            int
		certFile, keyFile, caCertFile string
	)
	cmd := &cobra.Command{
		Use:   "config --phase A|B|C|D [--config FILE | --cert-file F --key-file F --ca-cert-file F]",
		Short: "Print the redis.conf TLS block for a phase (A: no TLS; B and C: TLS added, password kept; D: plaintext off)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := redistransition.ParsePhase(phase)
			if err != nil {
				return withCode(exitUsage, fmt.Errorf("--phase: %w", err))
			}
			opts := redistransition.ServerConfigOptions{PlainPort: plainPort, TLSPort: tlsPort,
				TLSFiles: redistransition.TLSFiles{CertFile: certFile, KeyFile: keyFile, CAFile: caCertFile}}
			if cfgPath != "" {
				cfg, err := loadSettings(cfgPath)
				if err != nil {
					return err
				}
				if cfg.Redis == nil || cfg.Redis.Transition == nil {
					return withCode(exitUsage, fmt.Errorf("%s: no redis.transition section", cfgPath))
				}
				t := cfg.Redis.Transition
				opts = redistransition.ServerConfigOptions{PlainPort: t.PlainPort, TLSPort: t.TLSPort,
					TLSFiles: redistransition.TLSFiles{CertFile: t.CertFile, KeyFile: t.KeyFile, CAFile: t.CACertFile}}
			}
			out, err := redistransition.ServerConfig(p, opts)
			if err != nil {
				return withCode(exitUsage, err)
			}
			_, err = io.WriteString(cmd.OutOrStdout(), out)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&phase, "phase", "", "A, B, C or D")
	f.StringVarP(&cfgPath, "config", "c", "", "take ports and files from this agent configuration's redis.transition")
	f.IntVar(&plainPort, "plain-port", redistransition.DefaultPlainPort, "plaintext port")
	f.IntVar(&tlsPort, "tls-port", redistransition.DefaultTLSPort, "TLS port")
	f.StringVar(&certFile, "cert-file", "/etc/identity-agent/certs/redis/svid.pem", "tls-cert-file")
	f.StringVar(&keyFile, "key-file", "/etc/identity-agent/certs/redis/key.pem", "tls-key-file")
	f.StringVar(&caCertFile, "ca-cert-file", "/etc/identity-agent/certs/redis/bundle.pem", "tls-ca-cert-file")
	return cmd
}

func newRedisTransitionCmd() *cobra.Command {
	var (
		cfgPath string
		confirm bool
		asJSON  bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "transition status|advance|rollback --config FILE [--confirm]",
		Short: "Walk Redis from password auth (A) to mTLS only (D) behind gates; roll back",
		Long: `Phases: A no TLS; B TLS port added, password kept; C clients validated on TLS;
D plaintext port closed, mTLS enforced. 'advance' applies the next phase only
when every gate passes (TLS port answers PING with the agent's SVID; no
plaintext connection for the configured window, sampled by the running agent;
health checks; --confirm), saving the previous settings; 'rollback' restores
them. A refused step exits 1 and names each failing gate.`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"status", "advance", "rollback"},
		RunE: func(cmd *cobra.Command, args []string) error {
			action := args[0]
			if action != "status" && action != "advance" && action != "rollback" {
				return withCode(exitUsage, fmt.Errorf("unknown action %q: use status, advance or rollback", action))
			}
			cfg, err := loadSettings(cfgPath)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			src := svid.NewSource(svid.WithAddr(cfg.WorkloadAPI.Socket))
			if err := src.Start(ctx); err != nil {
				return withCode(exitFailure, fmt.Errorf("workload API %s: %w", cfg.WorkloadAPI.Socket, err))
			}
			defer func() { _ = src.Close() }()
			waitCtx, waitCancel := context.WithTimeout(ctx, timeout/2)
			if err := src.WaitReady(waitCtx); err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "identity-agent: warning: no SVID from %s yet; the tls-ping gate will fail\n", cfg.WorkloadAPI.Socket)
			}
			waitCancel()
			tr, adm, err := agent.RedisTransition(cfg, src)
			if err != nil {
				return withCode(exitUsage, err)
			}
			defer func() { _ = adm.Close() }()
			return runTransition(ctx, cmd.OutOrStdout(), tr, action, confirm, asJSON)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfgPath, "config", "c", "", "agent configuration with a redis.transition section")
	f.BoolVar(&confirm, "confirm", false, "the operator's confirmation gate for advance and rollback")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.DurationVar(&timeout, "timeout", 60*time.Second, "overall time limit")
	return cmd
}

func runTransition(ctx context.Context, w io.Writer, tr *redistransition.Transition, action string, confirm, asJSON bool) error {
	var (
		result any
		err    error
	)
	switch action {
	case "status":
		var st *redistransition.Status
		st, err = tr.Status(ctx, confirm)
		if err == nil && !asJSON {
			return redistransition.WriteStatus(w, st)
		}
		result = st
	case "advance":
		result, err = tr.Advance(ctx, confirm)
	case "rollback":
		result, err = tr.Rollback(ctx, confirm)
	}
	if err != nil {
		var gate *redistransition.GateError
		if errors.As(err, &gate) {
			return withCode(exitFailure, err)
		}
		return withCode(exitFailure, fmt.Errorf("redis transition %s: %w", action, err))
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(result)
	}
	if r, ok := result.(*redistransition.Result); ok {
		fmt.Fprintf(w, "phase %s → %s: set %v, config rewritten: %v\n", r.From, r.To, r.Set, r.Rewrote)
	}
	return nil
}
