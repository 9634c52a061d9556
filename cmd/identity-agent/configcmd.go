package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/identity-agent/identity-agent/internal/agent"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with configuration files"}
	cmd.AddCommand(&cobra.Command{
		Use:   "validate FILE",
		Short: "Check a configuration file; print one line per problem and exit 2 if any",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(args[0])
			if err != nil {
				return err
			}
			// Build everything once more without starting it: this checks
			// what only the packages know (allow-list syntax, loopback rules,
			// users and groups that must exist).
			if _, err := agent.New(cfg, agent.Options{}); err != nil {
				return withCode(exitUsage, err)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s: OK (%d outputs, %d proxies)\n", args[0], len(cfg.Outputs), len(cfg.Proxies))
			return err
		},
	})
	return cmd
}
