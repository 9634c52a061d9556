package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/identity-agent/identity-agent/internal/admin"
	"github.com/identity-agent/identity-agent/internal/config"
)

// EnvAdmin overrides the default admin address for `status`.
const EnvAdmin = "IDENTITY_AGENT_ADMIN"

func newStatusCmd() *cobra.Command {
	var (
		addr, cfgPath string
		asJSON        bool
		timeout       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status [--admin SOCKET | --config FILE] [--json]",
		Short: "Report the running agent's health (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			// The agent running --config, not the socket an edit names.
			_, report, err := findAgent(ctx, addr, cfgPath, 0)
			// An edit that is not YAML is the file's problem, not the
			// agent's: the agent runs the version it applied before.
			var fileProblem string
			if addr == "" && cfgPath != "" {
				if perr := unparsableConfig(cfgPath); perr != nil {
					fileProblem = "config " + strings.ReplaceAll(perr.Error(), "\n", "; ") + notAppliedRuns
				}
			}
			if err != nil { // UNKNOWN on stdout, like every other grade
				reasons := []string{err.Error()}
				if fileProblem != "" {
					// No agent was found, so none is known to run anything:
					// the file may be why (its admin: block), --admin helps.
					fileProblem = strings.TrimSuffix(fileProblem, notAppliedRuns) + notAppliedFind
					reasons = append(reasons, fileProblem)
				}
				if asJSON {
					_ = json.NewEncoder(cmd.OutOrStdout()).Encode(verdict{admin.Unknown.String(), reasons})
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "UNKNOWN: %s\n", strings.Join(reasons, "; "))
				}
				return withCode(int(admin.Unknown), errors.New(""))
			}
			sev, reasons := admin.Evaluate(report)
			if fileProblem != "" {
				sev = max(sev, admin.Warning)
				reasons = append(reasons, fileProblem)
			}
			if asJSON {
				out := struct {
					verdict
					admin.Report
				}{verdict{sev.String(), reasons}, report}
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(out); err != nil {
					return withCode(int(admin.Unknown), err)
				}
			} else {
				printStatus(cmd.OutOrStdout(), report, sev, reasons)
			}
			if sev == admin.OK {
				return nil
			}
			return withCode(int(sev), errors.New(""))
		},
	}
	cmd.Flags().StringVar(&addr, "admin", "", "the agent's admin unix socket (default: from --config, $"+EnvAdmin+", or "+config.AdminSocketFor(runtime.GOOS)+")")
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "report the agent that runs this configuration file")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the full report as JSON")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for the agent")
	return cmd
}

// What status adds to a config file problem: when the agent answered, and
// when none was found.
const (
	notAppliedRuns = " (not applied; the agent runs the previous version)"
	notAppliedFind = " (not applied; pass --admin SOCKET to reach the agent)"
)

// verdict heads the --json output: the grade and its reasons.
type verdict struct {
	Severity string   `json:"severity"`
	Reasons  []string `json:"reasons"`
}

// statusTarget is addr, else $IDENTITY_AGENT_ADMIN, else the default
// socket; with --config, findAgent chooses instead.
func statusTarget(addr string) (string, error) {
	switch {
	case addr != "":
	case os.Getenv(EnvAdmin) != "":
		addr = os.Getenv(EnvAdmin)
	default:
		addr = config.AdminSocketFor(runtime.GOOS)
	}
	// The agent serves /status on its unix socket only (metrics_listen
	// serves /metrics and nothing else).
	if strings.Contains(addr, "://") && !strings.HasPrefix(addr, "unix://") {
		return "", fmt.Errorf("admin address %q: the agent serves status only on its admin unix socket (a path or unix:///path)", addr)
	}
	return addr, nil
}

func printStatus(w io.Writer, r admin.Report, sev admin.Severity, reasons []string) {
	head := sev.String()
	if len(reasons) > 0 {
		head += ": " + strings.Join(reasons, "; ")
	}
	fmt.Fprintln(w, head)
	api := r.WorkloadAPI
	conn := "connected"
	switch {
	case api.NoIdentity:
		conn = "reachable, NO identity issued"
	case !api.Connected:
		conn = "NOT connected"
	}
	fmt.Fprintf(w, "agent %s, up %s; Workload API %s %s (reconnects %d)\n",
		r.Version, r.Now.Sub(r.StartedAt).Round(time.Second), api.Addr, conn, api.Reconnects)
	for _, s := range r.SVIDs {
		hint := ""
		if s.Hint != "" {
			hint = " hint=" + s.Hint
		}
		fmt.Fprintf(w, "svid    %s%s serial=%s not_after=%s (in %s)\n", s.SpiffeID, hint, s.Serial,
			s.NotAfter.UTC().Format(time.RFC3339), s.NotAfter.Sub(r.Now).Round(time.Second))
	}
	for _, o := range r.Outputs {
		fmt.Fprintf(w, "output  %s files=%s", o.Name, strings.Join(o.Files, ","))
		if o.Serial != "" {
			fmt.Fprintf(w, " serial=%s not_after=%s", o.Serial, o.NotAfter.UTC().Format(time.RFC3339))
		}
		if !o.LastWrite.IsZero() {
			fmt.Fprintf(w, " written=%s", o.LastWrite.UTC().Format(time.RFC3339))
		}
		if o.LastWriteError != "" {
			fmt.Fprintf(w, " write_error=%q", o.LastWriteError)
		}
		if !o.LastReload.IsZero() {
			result := "ok"
			if o.LastReloadError != "" {
				result = fmt.Sprintf("%q", o.LastReloadError)
			}
			fmt.Fprintf(w, " reloaded=%s result=%s", o.LastReload.UTC().Format(time.RFC3339), result)
		}
		if v := o.Verify; v != nil {
			served := v.ServedSerial
			if served == "" {
				served = "-"
			}
			fmt.Fprintf(w, " verify=%s served=%s verified=%t", v.Address, served, v.Verified)
		}
		fmt.Fprintln(w)
	}
	for _, p := range r.Proxies {
		var handshakeFailures uint64
		for _, n := range p.HandshakeFailures {
			handshakeFailures += n
		}
		var shed uint64
		for _, n := range p.HandshakesShed {
			shed += n
		}
		fmt.Fprintf(w, "proxy   %s %s %s -> %s connections_open=%d connections_total=%d connections_refused=%d bytes_to_target=%d bytes_from_target=%d handshake_failures=%d handshaking=%d/%d authenticated=%d/%d handshakes_shed=%d\n",
			p.Name, p.Mode, p.Listen, p.Target, p.ConnectionsOpen, p.ConnectionsTotal, p.ConnectionsRefused,
			p.BytesToTarget, p.BytesFromTarget, handshakeFailures,
			p.ConnectionsHandshaking, p.MaxHandshakes, p.ConnectionsAuthenticated, p.MaxConns, shed)
	}
	if rd := r.Redis; rd != nil {
		sm := rd.Sample
		fmt.Fprintf(w, "redis   phase=%s samples=%d plaintext=%d tls=%d", cmp.Or(string(rd.Phase), "-"), sm.Samples, sm.Last.Plaintext, sm.Last.TLS)
		if !sm.LastSample.IsZero() {
			fmt.Fprintf(w, " last_sample=%s", sm.LastSample.UTC().Format(time.RFC3339))
		}
		if !sm.PlaintextZeroSince.IsZero() {
			fmt.Fprintf(w, " plaintext_free_since=%s", sm.PlaintextZeroSince.UTC().Format(time.RFC3339))
		}
		if rd.Error != "" {
			fmt.Fprintf(w, " error=%q", rd.Error)
		}
		fmt.Fprintln(w)
	}
}
