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
		Short: "Remove a node: revoke its certificates and forget it",
		Long: `Remove a node from the cloud. Its certificates are revoked at once: the node's
agent gets "certificate revoked" and stops, and a restart with its old
certificate is refused. The controller forgets the node and the port forwards
it carried: nothing is placed on it, and a machine that joins under the name
later (with a join token, its DATA-DIR/pki removed) is a new node.

A node that still hosts live instances is refused unless --force, which
terminates them with the state reason "Server.InternalError: the node NAME
hosting the instance was removed" (describe-instances shows it): the
controller can no longer reach their VMs. Use --force for a node that is
dead for good; a node that joins again under the name deletes the VMs it
still runs that the controller does not list.`,
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
			for _, id := range out.TerminatedInstances {
				fmt.Fprintf(cmd.OutOrStdout(), "instance %s terminated: it was on the removed node\n", id)
			}
			for _, id := range out.DeletedForwards {
				fmt.Fprintf(cmd.OutOrStdout(), "forward %s deleted: the removed node carried it\n", id)
			}
			return nil
		},
	}
	cf.add(cmd)
	cmd.Flags().BoolVar(&force, "force", false, "remove the node even if it still hosts live instances (they are terminated)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}
