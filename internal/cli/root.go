// Package cli holds the cobra command tree of the clipper binary: one file per
// noun. Commands only parse flags and call into the library packages.
package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// exitError carries a specific exit status out of a command.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// Main runs the command line and returns the process exit status.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd()
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			return ee.code
		}
		fmt.Fprintln(os.Stderr, "clipper:", err)
		return 1
	}
	return 0
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "clipper",
		Short:         "Clipper turns your Linux machines into a cloud that speaks EC2",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newVersionCmd(),
		newDoctorCmd(),
		newUpCmd(),
		newControllerCmd(),
		withNodeAdmin(newNodeCmd()),
		newInstanceCmd(),
		newForwardCmd(),
		newNetworkCmd(),
		newTokenCmd(),
		newImageCmd(),
	)
	return root
}
