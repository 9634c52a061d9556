package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/identity-agent/identity-agent/internal/admin"
	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/internal/service"
)

func newReloadCmd() *cobra.Command {
	var (
		cfgPath, addr string
		pid           int
		timeout       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "reload [--config FILE | --admin SOCKET] [--pid PID]",
		Short: "Make the running agent apply its edited configuration, and wait for the outcome",
		Long: `Reload asks the running agent to read its configuration file again and
apply the difference (see docs/SERVICE.md for what applies live), then
waits until the agent has applied or refused it and prints the outcome.

Which agent: the one that runs FILE (compared after resolving symlinks)
and, with --pid, is that process; never merely the one behind the socket
the edited FILE names (admin.socket cannot change while the agent runs).
It looks at the socket the agent recorded at start under systemd
($RUNTIME_DIRECTORY or /run/identity-agent/agent.json), the one FILE
names, $IDENTITY_AGENT_ADMIN and the default socket. A FILE that is not
the running agent's is refused (exit 2), and so is a FILE that is not
YAML, before the agent is asked (the line 'config validate' prints).

How it asks: with --pid, SIGHUP to that process (the systemd unit's
ExecReload uses this); else through the service manager when it runs the
agent ('systemctl reload identity-agent', or on macOS, where launchd has no
reload verb, 'launchctl kill SIGHUP system/io.identity-agent'); else SIGHUP
to the pid the agent reports on its admin socket, once the kernel confirms
that this process is the one serving the socket.

Exit codes: 0 applied, 2 refused (the file's problems are printed, the
running configuration is unchanged), 1 the agent could not be asked or did
not answer in time.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			// A file that is not YAML is refused here, with the line
			// `config validate` prints; the agent is not asked.
			if addr == "" && cfgPath != "" {
				if perr := unparsableConfig(cfgPath); perr != nil {
					return withCode(exitUsage, perr)
				}
			}
			// The running agent, whatever socket the edited file names.
			target, before, err := findAgent(ctx, addr, cfgPath, pid)
			if err != nil {
				return orCode(exitFailure, err)
			}
			how, err := askReload(ctx, pid, before.PID, target)
			var mgrErr *managerError
			switch {
			case errors.As(err, &mgrErr):
				// systemd fails the reload job when the agent refused the
				// file (the unit's ExecReload reports it): the agent's own
				// account of the refusal is what the operator needs.
				wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
				defer wcancel()
				if after, werr := waitReload(wctx, target, before.Config.Reloads); werr == nil {
					return printReload(cmd.OutOrStdout(), after)
				}
				return withCode(exitFailure, err)
			case err != nil:
				return withCode(exitFailure, err)
			}
			after, err := waitReload(ctx, target, before.Config.Reloads)
			if err != nil {
				return withCode(exitFailure, fmt.Errorf("asked by %s; %w", how, err))
			}
			return printReload(cmd.OutOrStdout(), after)
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "the running agent's configuration file (refused when the agent runs another)")
	cmd.Flags().StringVar(&addr, "admin", "", "the agent's admin socket (default: from --config, $"+EnvAdmin+", or the platform default)")
	cmd.Flags().IntVar(&pid, "pid", 0, "send SIGHUP to this process instead of asking the service manager")
	cmd.Flags().DurationVar(&timeout, "timeout", 60*time.Second, "how long to wait for the agent to apply the configuration")
	return cmd
}

// orCode is withCode unless err already carries an exit code.
func orCode(code int, err error) error {
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	return withCode(code, err)
}

// askReload delivers the request and says how.
func askReload(ctx context.Context, pid, reported int, target string) (string, error) {
	if pid > 0 {
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			return "", fmt.Errorf("SIGHUP to pid %d: %w", pid, err)
		}
		return fmt.Sprintf("SIGHUP to pid %d", pid), nil
	}
	if argv := managerReload(ctx, reported); argv != nil {
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			return "", &managerError{fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))}
		}
		return strings.Join(argv, " "), nil
	}
	if reported <= 0 {
		return "", errors.New("the agent does not report its pid; pass --pid")
	}
	// The pid is what the socket says; a SIGHUP kills most programs, so
	// only the process the kernel knows serves the socket is signalled.
	served, err := adminServerPID(ctx, target)
	if err != nil {
		return "", fmt.Errorf("admin socket %s: cannot tell which process serves it (%w); not signalling, pass --pid", target, err)
	}
	if served != reported {
		return "", fmt.Errorf("admin socket %s reports pid %d but is served by pid %d; not signalling, pass --pid", target, reported, served)
	}
	if err := syscall.Kill(reported, syscall.SIGHUP); err != nil {
		return "", fmt.Errorf("SIGHUP to the agent's pid %d: %w", reported, err)
	}
	return fmt.Sprintf("SIGHUP to pid %d (from the admin socket)", reported), nil
}

// managerError is a service manager's failed reload command, which may
// only mean that the agent refused the file.
type managerError struct{ err error }

func (e *managerError) Error() string { return e.err.Error() }
func (e *managerError) Unwrap() error { return e.err }

// adminServerPID is the pid of the process listening on the admin socket.
func adminServerPID(ctx context.Context, target string) (int, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", strings.TrimPrefix(target, "unix://"))
	if err != nil {
		return 0, err
	}
	defer func() { _ = c.Close() }()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	return admin.PeerPID(raw)
}

// managerReload is the service manager's way to reload the agent when the
// manager runs it (on Linux: the unit is active and its main pid is the
// agent found, not another agent on the host), or nil.
func managerReload(ctx context.Context, agentPID int) []string {
	switch runtime.GOOS {
	case "darwin":
		job := "system/" + service.LaunchdName
		if exec.CommandContext(ctx, "launchctl", "print", job).Run() == nil {
			return []string{"launchctl", "kill", "SIGHUP", job}
		}
	case "linux":
		unit := service.SystemdName + ".service"
		if exec.CommandContext(ctx, "systemctl", "is-active", "--quiet", unit).Run() != nil {
			return nil
		}
		out, err := exec.CommandContext(ctx, "systemctl", "show", "--property=MainPID", "--value", unit).Output()
		if err == nil && strings.TrimSpace(string(out)) == strconv.Itoa(agentPID) {
			return []string{"systemctl", "reload", unit}
		}
	}
	return nil
}

// waitReload polls the admin socket until the agent reports a reload
// attempt after the one it had made before it was asked.
func waitReload(ctx context.Context, target string, before uint64) (admin.Report, error) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		r, err := admin.Fetch(ctx, target)
		if err == nil && r.Config.Reloads > before {
			return r, nil
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return r, fmt.Errorf("no answer from the agent: %w", err)
			}
			return r, errors.New("the agent did not report the reload in time (is it still starting? it applies reloads once ready)")
		case <-t.C:
		}
	}
}

func printReload(w io.Writer, r admin.Report) error {
	last := r.Config.LastReload
	if last == nil {
		return withCode(exitFailure, errors.New("the agent reports no reload"))
	}
	if last.Error != "" {
		fmt.Fprintf(w, "reload refused; the agent keeps running the configuration applied %s\n", r.Config.AppliedAt.Format(time.RFC3339))
		for _, line := range strings.Split(last.Error, "\n") {
			fmt.Fprintln(w, line)
		}
		return withCode(exitUsage, errors.New(""))
	}
	if len(last.Changes) == 0 {
		fmt.Fprintf(w, "reloaded %s (sha256 %s): nothing changed\n", r.Config.Path, short(last.Hash))
		return nil
	}
	fmt.Fprintf(w, "reloaded %s (sha256 %s):\n", r.Config.Path, short(last.Hash))
	for _, c := range last.Changes {
		fmt.Fprintln(w, "  "+c)
	}
	return nil
}

func short(hash string) string {
	if len(hash) > 12 {
		return hash[:12]
	}
	return hash
}

// adminSocketOf reads admin.socket from a config file without checking
// the rest: the file is being reloaded, possibly into a refusal that must
// still be reported. Absent, it is the platform default.
func adminSocketOf(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return adminSocketFromYAML(path, data)
}

func adminSocketFromYAML(path string, data []byte) (string, error) {
	var doc struct {
		Admin struct {
			Socket string `yaml:"socket"`
		} `yaml:"admin"`
	}
	// Not strict: unknown keys and the rest of the file are the reload's
	// business, and the agent reports them.
	if err := yaml.Unmarshal(data, &doc); err != nil {
		// Not YAML: the admin block alone may still be, and it names the
		// socket the running agent was most likely started with.
		if yaml.Unmarshal(adminBlock(data), &doc) != nil || doc.Admin.Socket == "" {
			return "", fmt.Errorf("%s: not YAML, and no admin.socket could be read from it: %w", path, err)
		}
	}
	if doc.Admin.Socket != "" {
		return statusTarget(doc.Admin.Socket)
	}
	return config.AdminSocketFor(runtime.GOOS), nil
}

// adminBlock is the top-level "admin:" block of a config file, cut out by
// indentation: what can still be read of admin.socket when a mistake
// elsewhere makes the file as a whole not YAML.
func adminBlock(data []byte) []byte {
	var out []byte
	in := false
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		top := len(line) > 0 && line[0] != ' ' && line[0] != '\t' && line[0] != '#' && len(bytes.TrimSpace(line)) > 0
		if top {
			in = bytes.HasPrefix(line, []byte("admin:"))
		}
		if in {
			out = append(out, line...)
		}
	}
	return out
}
