package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with configuration files"}
	cmd.AddCommand(&cobra.Command{
		Use:   "validate FILE",
		Short: "Check a configuration file; print one line per problem and exit 2 if any",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// The same check `run` makes before it starts anything, and like
			// it, this creates, opens and changes nothing.
			p, err := loadPlan(args[0])
			if err != nil {
				return err
			}
			for _, w := range warningLines(p) {
				if _, err := fmt.Fprintln(cmd.ErrOrStderr(), "warning: "+w); err != nil {
					return err
				}
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s: OK (%d outputs, %d proxies)\n", args[0], len(p.Config.Outputs), len(p.Config.Proxies))
			return err
		},
	})
	return cmd
}
