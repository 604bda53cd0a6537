package cli

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/clipper-cloud/clipper/internal/api"
)

func newForwardCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "forward", Short: "Manage port forwards (DNAT from a node's address to any address it reaches)"}
	cmd.AddCommand(newForwardCreateCmd(), newForwardLsCmd(), newForwardRmCmd())
	return cmd
}

func newForwardCreateCmd() *cobra.Command {
	var cf clientFlags
	var req api.ForwardRequest
	cmd := &cobra.Command{
		Use:   "create --listen PUBLIC_IP:PORT --to ADDR:PORT [--proto tcp|udp] [--node NAME]",
		Short: "Forward connections to an address of a node to another address",
		Long: `Forward connections to PUBLIC_IP:PORT, on the node that carries the forward,
to ADDR:PORT: an instance's private address or any address the node reaches.
PUBLIC_IP is an address of the public pool that is not an elastic IP; each
protocol, address and port is forwarded once, and all the forwards of one
address are on one node (it answers ARP for it).
The node translates the destination (DNAT) and the source (MASQUERADE), so
answers come back through it. Traffic to an instance still passes its
security groups. The node is the one that hosts the target instance unless
--node names one.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			body, _ := json.Marshal(req)
			sum := sha256.Sum256(body)
			var f api.ForwardInfo
			if err := c.Do(cmd.Context(), "POST", api.Prefix+"forwards", bytes.NewReader(body), int64(len(body)),
				hex.EncodeToString(sum[:]), &f); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), f.ID)
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Listen, "listen", "", "PUBLIC_IP:PORT to answer on")
	cmd.Flags().StringVar(&req.To, "to", "", "ADDR:PORT to forward to")
	cmd.Flags().StringVar(&req.Protocol, "proto", "tcp", "tcp or udp")
	cmd.Flags().StringVar(&req.Node, "node", "", "node that carries the forward (default: the target instance's)")
	cmd.MarkFlagRequired("listen")
	cmd.MarkFlagRequired("to")
	cf.add(cmd)
	return cmd
}

func newForwardLsCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List port forwards",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			var fs []api.ForwardInfo
			if err := c.Do(cmd.Context(), "GET", api.Prefix+"forwards", nil, 0, emptySHA256, &fs); err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tPROTO\tLISTEN\tTO\tNODE")
			for _, f := range fs {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", f.ID, f.Protocol, f.Listen, f.To, f.Node)
			}
			return w.Flush()
		},
	}
	cf.add(cmd)
	return cmd
}

func newForwardRmCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:     "rm ID...",
		Aliases: []string{"delete"},
		Short:   "Delete port forwards",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			for _, id := range args {
				if err := c.Do(cmd.Context(), "DELETE", api.Prefix+"forwards/"+url.PathEscape(id), nil, 0, emptySHA256, nil); err != nil {
					return fmt.Errorf("%s: %w", id, err)
				}
			}
			return nil
		},
	}
	cf.add(cmd)
	return cmd
}
