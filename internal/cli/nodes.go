package cli

import (
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/clipper-cloud/clipper/internal/api"
)

// emptySHA256 is the payload hash of a call without a body.
const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// withNodeAdmin adds the operator's node commands (ls, cordon, drain,
// uncordon) under `clipper node`, which itself runs an agent.
func withNodeAdmin(node *cobra.Command) *cobra.Command {
	node.AddCommand(newNodeLsCmd())
	for _, a := range []struct{ name, short string }{
		{"cordon", "Keep new instances off a node"},
		{"drain", "Keep new instances off a node and move its running instances to others, live"},
		{"uncordon", "Let the scheduler place instances on a node again"},
	} {
		node.AddCommand(newNodeScheduleCmd(a.name, a.short))
	}
	return node
}

func newNodeLsCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List nodes with their state, capacity, usage and self-check condition",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			var nodes []api.NodeInfo
			if err := c.Do(cmd.Context(), "GET", api.Prefix+"nodes", nil, 0, emptySHA256, &nodes); err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tSTATE\tZONE\tADDRESS\tVCPUS\tMEMORY MIB\tDISK GIB\tLAST SEEN\tCONDITION")
			for _, n := range nodes {
				seen := "never"
				if !n.LastSeen.IsZero() {
					seen = time.Since(n.LastSeen).Round(time.Second).String() + " ago"
				}
				cond := "-" // no self-check yet
				if n.SelfCheck != nil {
					cond = n.SelfCheck.Summary()
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d/%d\t%d/%d\t%d/%d\t%s\t%s\n", n.Name, n.State, n.Zone, dash(n.Address),
					n.Used.VCPUs, n.Capacity.VCPUs, n.Used.MemoryMiB, n.Capacity.MemoryMiB,
					n.Used.DiskMiB>>10, n.Capacity.DiskMiB>>10, seen, cond)
			}
			return w.Flush()
		},
	}
	cf.add(cmd)
	return cmd
}

func newNodeScheduleCmd(action, short string) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   action + " NAME",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			var n api.NodeInfo
			path := api.Prefix + "nodes/" + url.PathEscape(args[0]) + "/" + action
			if err := c.Do(cmd.Context(), "POST", path, nil, 0, emptySHA256, &n); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", n.Name, n.State)
			printMoves(cmd.OutOrStdout(), n.Moves)
			return nil
		},
	}
	cf.add(cmd)
	return cmd
}

func dash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}
