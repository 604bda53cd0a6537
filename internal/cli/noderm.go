package cli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
)

func newNodeRmCmd() *cobra.Command {
	var cf clientFlags
	var force bool
	var output string
	cmd := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a node: revoke its certificates and mark it down",
		Long: `Remove a node from the cloud. Its certificates are revoked at once: the node's
agent gets "certificate revoked" and stops. The node is marked down so nothing
is placed on it. A node that still hosts live instances is refused unless
--force. To bring the machine back, join it again with a join token (remove
its DATA-DIR/pki first).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("--output must be text or json")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			out, err := c.RemoveNode(cmd.Context(), args[0], force)
			if err != nil {
				return err
			}
			if output == "json" {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "node %s removed (%d certificate(s) revoked)\n", out.Name, out.RevokedCertificates)
			return nil
		},
	}
	cf.add(cmd)
	cmd.Flags().BoolVar(&force, "force", false, "remove the node even if it still hosts live instances")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}
