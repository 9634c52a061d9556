package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/identity-agent/identity-agent/internal/agent"
	"github.com/identity-agent/identity-agent/internal/service"
)

// newServiceCmds returns install/uninstall/start/stop/restart and the
// `service` group (status, prepare).
func newServiceCmds() []*cobra.Command {
	var (
		cfgPath, user, binary string
	)
	install := &cobra.Command{
		Use:   "install --config FILE [--user U]",
		Short: "Install identity-agent as a system service (systemd on Linux, launchd on macOS)",
		Long: `Install renders the hardened unit (or plist) from packaging/ with the
config's output directories as the only writable paths, creates the service
user when --user is not given (identity-agent), and registers the service.
It does not start it: run 'identity-agent start'.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Checked for the service's user, who will own and write the
			// output dirs (a re-install finds them theirs); until install
			// creates that user, no dir can be theirs yet.
			svcUser := user
			if svcUser == "" {
				svcUser = service.ReferenceConfig(runtime.GOOS).User
			}
			as, err := runAs(svcUser)
			if err != nil {
				as = agent.Self()
			}
			cfg, err := loadConfigAs(cfgPath, as)
			if err != nil {
				return err
			}
			abs, err := filepath.Abs(cfgPath)
			if err != nil {
				return withCode(exitUsage, err)
			}
			ic := service.LayoutFromConfig(cfg).InstallConfig(abs, user)
			ic.CreateUser = user == ""
			if binary != "" {
				ic.BinaryPath = binary
			} else if exe, err := os.Executable(); err == nil {
				ic.BinaryPath = exe
			}
			res, err := service.Install(ic)
			if err != nil {
				return withCode(exitFailure, err)
			}
			state := "installed"
			if !res.Changed {
				state = "already installed, unchanged"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", res.Path, state)
			return nil
		},
	}
	install.Flags().StringVarP(&cfgPath, "config", "c", "", "agent configuration the service runs with")
	install.Flags().StringVar(&user, "user", "", "user to run as (default: create and use identity-agent)")
	install.Flags().StringVar(&binary, "binary", "", "installed binary path (default: this executable)")

	simple := func(use, short string, f func() error) *cobra.Command {
		return &cobra.Command{Use: use, Short: short, Args: cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error { return withCode(exitFailure, f()) }}
	}

	var prepCfg, prepUser string
	prepare := &cobra.Command{
		Use:   "prepare --config FILE [--user U]",
		Short: "Create output and socket directories with the right owner (the unit's ExecStartPre, as root)",
		Args:  cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			// Checked for the user who will own the dirs and run the agent,
			// not for root who runs this step.
			as, err := runAs(prepUser)
			if err != nil {
				return err
			}
			cfg, err := loadConfigAs(prepCfg, as)
			if err != nil {
				return err
			}
			return withCode(exitFailure, service.LayoutFromConfig(cfg).Prepare(prepUser))
		},
	}
	prepare.Flags().StringVarP(&prepCfg, "config", "c", "", "agent configuration")
	prepare.Flags().StringVar(&prepUser, "user", "", "owner of the directories (default: the caller)")

	svc := &cobra.Command{Use: "service", Short: "Service management details"}
	svc.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "Print whether the service is installed and running (exit 0 running, 3 otherwise)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := service.Status()
			fmt.Fprintln(cmd.OutOrStdout(), st)
			if err != nil {
				return withCode(3, err)
			}
			if st != service.StateRunning {
				return withCode(3, errors.New(""))
			}
			return nil
		},
	}, prepare)

	return []*cobra.Command{
		install,
		simple("uninstall", "Remove the service definition", service.Uninstall),
		simple("start", "Start the installed service", service.Start),
		simple("stop", "Stop the installed service", service.Stop),
		simple("restart", "Restart the installed service", service.Restart),
		svc,
	}
}
