package main

import (
	"fmt"
	"os/user"
	"strconv"

	"github.com/spf13/cobra"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with configuration files"}
	var asUser string
	validate := &cobra.Command{
		Use:   "validate FILE [--user NAME]",
		Short: "Check a configuration file; print one line per problem and exit 2 if any",
		Long: `Validate makes the check 'run' makes before it starts anything, and like
it creates, opens and changes nothing. It checks for the agent running as
this user, or as the user --user names: an existing output dir must be a
real directory owned by that user. A service runs as its own user
(identity-agent), so as root pass --user identity-agent.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			as, err := runAs(asUser)
			if err != nil {
				return err
			}
			if asUser == "" && as.UID == 0 {
				as.Hint = rootHint
			}
			p, err := loadPlanAs(args[0], as)
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
	}
	validate.Flags().StringVar(&asUser, "user", "", "check as the agent running as this user would (default: the current user)")
	cmd.AddCommand(validate)
	return cmd
}

// rootHint completes the refusal of a dir another user owns when root
// validates without --user: after install the dirs belong to the service's
// user, and root is not who writes them.
func rootHint(owner int) string {
	if owner == 0 {
		return ""
	}
	u, err := user.LookupId(strconv.Itoa(owner))
	if err != nil {
		return fmt.Sprintf("; validating as root: pass --user with the name of uid %d to check as the service's user", owner)
	}
	return "; validating as root: pass --user " + u.Username + " to check as the service's user"
}
