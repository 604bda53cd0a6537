package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/clipper-cloud/clipper/internal/version"
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of clipper",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "clipper %s (EC2 API %s)\n", version.Version, version.APIVersion)
			return nil
		},
	}
}
