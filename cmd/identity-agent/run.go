package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/identity-agent/identity-agent/internal/agent"
	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/internal/sdnotify"
	"github.com/identity-agent/identity-agent/internal/service"
)

// loadPlanAs reads the config and checks it with every rule `run` applies
// before it starts (agent.LoadAs, no side effects), for the agent running
// as as (see runAs); a bad file is a usage error (exit 2) whose message is
// one "FILE:LINE: field: problem" line per problem, all of them at once.
func loadPlanAs(path string, as agent.RunAs) (*agent.Plan, error) {
	if path == "" {
		return nil, withCode(exitUsage, errors.New("--config is required"))
	}
	p, err := agent.LoadAs(path, os.Getenv, as)
	if err != nil {
		return nil, withCode(exitUsage, err)
	}
	return p, nil
}

// loadConfigAs is loadPlanAs for commands that need only the config.
func loadConfigAs(path string, as agent.RunAs) (*config.Config, error) {
	p, err := loadPlanAs(path, as)
	if err != nil {
		return nil, err
	}
	return p.Config, nil
}

// loadSettings is loadConfigAs for commands that read the config's settings
// and write no output dir (`redis config`, `redis transition`): root runs
// them next to a service whose user owns the output dirs, so the owner rule,
// a rule for whoever writes the dirs, is not theirs to apply.
func loadSettings(path string) (*config.Config, error) {
	return loadConfigAs(path, agent.RunAs{SettingsOnly: true})
}

// runAs is whom a command checks the config for: the user --user names
// (looked up as `install --user` and `service prepare --user` do; an
// unknown one is a usage error), or this process's user when name is "".
func runAs(name string) (agent.RunAs, error) {
	if name == "" {
		return agent.Self(), nil
	}
	uid, err := service.LookupUID(name)
	if err != nil {
		return agent.RunAs{}, withCode(exitUsage, fmt.Errorf("--user: %w", err))
	}
	return agent.RunAs{UID: uid, Name: name}, nil
}

// loadToRun is the common start of run and fetch: the config read,
// checked as loadPlanAs does and planned once, with the agent's logger (made
// from the file's log settings; its level is what a reload sets), an
// unstarted Workload API source and a registry (agent.NewEnv). The plan's
// warnings go to the log, one entry each.
func loadToRun(path string, stderr io.Writer) (*agent.Plan, *zap.Logger, zap.AtomicLevel, error) {
	var (
		log   *zap.Logger
		level zap.AtomicLevel
	)
	if path == "" {
		return nil, nil, level, withCode(exitUsage, errors.New("--config is required"))
	}
	p, err := agent.LoadToRun(path, os.Getenv, func(cfg *config.Config) (agent.Env, error) {
		l, lv, err := newLeveledLogger(cfg.Log, stderr)
		if err != nil {
			return agent.Env{}, err
		}
		log, level = l, lv
		return agent.NewEnv(cfg, log), nil
	})
	if err != nil {
		return nil, nil, level, withCode(exitUsage, err)
	}
	for _, w := range warningLines(p) {
		log.Warn("configuration: " + w)
	}
	return p, log, level, nil
}

// warningLines are the plan's warnings, one "FILE:LINE: field: problem" each.
func warningLines(p *agent.Plan) []string {
	if p.Warnings == nil {
		return nil
	}
	return strings.Split(p.Warnings.Error(), "\n")
}

func newRunCmd() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run the agent: keep outputs rotated, serve proxies and the admin endpoint",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			plan, log, level, err := loadToRun(cfgPath, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			cfg := plan.Config
			defer func() { _ = log.Sync() }()
			// Directories the agent writes into or listens in; under systemd
			// `service prepare` already made them as root, this is a no-op.
			if err := service.LayoutFromConfig(cfg).Prepare(""); err != nil {
				return withCode(exitFailure, err)
			}
			notifier := sdnotify.New()
			a, err := agent.New(plan, agent.Options{
				Version: version,
				OnReady: func() {
					if _, err := notifier.Ready("SVIDs written"); err != nil {
						log.Warn("sd_notify READY", zap.Error(err))
					}
				},
				OnStopping: func() { _, _ = notifier.Stopping() },
				LogLevel:   &level,
				ConfigPath: canonicalPath(cfgPath),
			})
			if err != nil {
				return withCode(exitUsage, err)
			}
			// How `reload --pid $MAINPID` (ExecReload=) and `status` find
			// this agent after an edit of admin.socket (target.go).
			forget, err := writeRunningRecord(cfgPath, cfg.Admin.Socket)
			if err != nil {
				log.Warn("cannot record the admin socket for reload/status; they fall back to the config's socket", zap.Error(err))
				forget = func() {}
			}
			defer forget()
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			// Subscribed before Run, so a SIGHUP that arrives once the agent
			// reports healthy can never take Go's default action (exit).
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			hupDone := make(chan struct{})
			go func() { defer close(hupDone); reloadOnHUP(ctx, hup, a, cfgPath, notifier, log) }()
			dogDone := make(chan struct{})
			go func() {
				defer close(dogDone)
				feedWatchdog(ctx, notifier.WatchdogInterval()/2, a.Stalled, notifier.Watchdog, log)
			}()
			err = a.Run(ctx)
			stop()
			<-hupDone
			<-dogDone
			if err != nil {
				return withCode(exitFailure, err)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "agent configuration file (YAML)")
	return cmd
}

// reloadOnHUP answers SIGHUP, whose default action would kill the agent,
// with a live reload of the configuration file. systemd hears of it
// (RELOADING=1, then READY=1 whatever the outcome: a refused file leaves
// the agent running as it was); the verdict of `systemctl reload` is the
// unit's ExecReload= (`reload --pid $MAINPID`), which reads it from the
// admin socket, because READY=1 cannot say "refused".
func reloadOnHUP(ctx context.Context, hup <-chan os.Signal, a *agent.Agent, path string, n *sdnotify.Notifier, log *zap.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if _, err := n.Reloading("reloading " + path); err != nil {
				log.Warn("sd_notify RELOADING", zap.Error(err))
			}
			res := a.Reload(ctx, path)
			status := "configuration reloaded"
			if res.Err != nil {
				status = "configuration reload refused; running the previous configuration"
			}
			if _, err := n.Ready(status); err != nil {
				log.Warn("sd_notify READY", zap.Error(err))
			}
		}
	}
}

// feedWatchdog sends WATCHDOG=1 every interval (half the unit's
// WatchdogSec=; 0: no watchdog, nothing to do) while no output's rotation
// loop is stalled. A wedged loop stops the pings, and systemd restarts the
// agent after WatchdogSec=; so does a wedged process.
func feedWatchdog(ctx context.Context, interval time.Duration, stalled func() []string, ping func() (bool, error), log *zap.Logger) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	logged := false
	for {
		if s := stalled(); len(s) > 0 {
			if !logged {
				log.Error("rotation stalled past its own deadlines; no more watchdog pings, systemd will restart the agent",
					zap.Strings("outputs", s))
				logged = true
			}
		} else {
			logged = false
			if _, err := ping(); err != nil {
				log.Warn("sd_notify WATCHDOG", zap.Error(err))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func newFetchCmd() *cobra.Command {
	var (
		cfgPath string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "fetch --config FILE",
		Short: "Write every output once and exit (init containers, scripts)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			plan, log, _, err := loadToRun(cfgPath, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			cfg := plan.Config
			defer func() { _ = log.Sync() }()
			// The same prepare step as run: the only place the agent
			// creates its output directories (with their owners' groups).
			if err := service.LayoutFromConfig(cfg).Prepare(""); err != nil {
				return withCode(exitFailure, err)
			}
			a, err := agent.New(plan, agent.Options{Version: version})
			if err != nil {
				return withCode(exitUsage, err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			if err := a.Fetch(ctx); err != nil {
				return withCode(exitFailure, err)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "agent configuration file (YAML)")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "give up when the Workload API has not answered by then")
	return cmd
}
