// Command identity-agent is a SPIFFE workload-identity agent: it keeps
// X.509 and JWT SVIDs from the Workload API rotated on disk for services
// that read files, fronts services that cannot speak TLS with an mTLS
// proxy, and reports its health to monitoring.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/identity-agent/identity-agent/internal/config"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes shared by the commands; `status` uses the monitoring-plugin
// convention instead (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
const (
	exitFailure = 1 // the command could not do its job
	exitUsage   = 2 // bad flags or a bad configuration file
)

// exitError carries an exit code up to main without printing twice.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

func main() {
	os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr))
}

// execute runs the CLI and returns the process exit code.
func execute(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		var problems config.Problems
		switch {
		case ee.err == nil || ee.err.Error() == "":
		case errors.As(ee.err, &problems):
			// Already one "FILE:LINE: field: problem" line each, as the
			// README promises: no prefix.
			fmt.Fprintln(stderr, ee.err.Error())
		default:
			fmt.Fprintln(stderr, "identity-agent: "+ee.err.Error())
		}
		return ee.code
	}
	// Cobra's own flag and argument errors.
	fmt.Fprintln(stderr, "identity-agent: "+err.Error())
	return exitUsage
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "identity-agent",
		Short:         "SPIFFE workload-identity agent: rotated SVID files, mTLS proxies, health",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	// `--version` prints exactly what `version` prints.
	root.SetVersionTemplate("identity-agent {{.Version}}\n")
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(
		newRunCmd(),
		newFetchCmd(),
		newStatusCmd(),
		newReloadCmd(),
		newDevCmd(),
		newConfigCmd(),
		newVersionCmd(),
		newRedisCmd(),
		newProxyCmd(),
	)
	root.AddCommand(newServiceCmds()...)
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), "identity-agent "+version)
			return err
		},
	}
}
