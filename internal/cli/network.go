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

func newNetworkCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "network", Short: "Manage bridged networks (instances on an existing host bridge's LAN)"}
	cmd.AddCommand(newNetworkCreateCmd(), newNetworkLsCmd(), newNetworkRmCmd())
	return cmd
}

func newNetworkCreateCmd() *cobra.Command {
	var cf clientFlags
	var req api.NetworkRequest
	cmd := &cobra.Command{
		Use:   "create --bridge BRIDGE --cidr CIDR --gateway ADDR --range FIRST-LAST [--zone ZONE] [--name NAME]",
		Short: "Put instances on the LAN of an existing host bridge",
		Long: `Create a bridged network: the classic "bridge br0 onto eth0" setup, managed.
BRIDGE must exist on the nodes of the zone (Clipper neither creates nor
changes it). Instances launched into the network's subnet (run-instances
--subnet-id) are hosts on that LAN: they get an address from FIRST-LAST by
DHCP from the node (which answers only their MACs), with the LAN's router
ADDR as gateway and DNS server. Security groups and anti-spoofing still
apply on the node. Prints the VPC and subnet IDs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			body, _ := json.Marshal(req)
			sum := sha256.Sum256(body)
			var n api.NetworkInfo
			if err := c.Do(cmd.Context(), "POST", api.Prefix+"networks", bytes.NewReader(body), int64(len(body)),
				hex.EncodeToString(sum[:]), &n); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\n", n.VPCID, n.SubnetID)
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Bridge, "bridge", "", "existing host bridge on the nodes (e.g. br0)")
	cmd.Flags().StringVar(&req.CIDR, "cidr", "", "the LAN's prefix (e.g. 192.168.1.0/24)")
	cmd.Flags().StringVar(&req.Gateway, "gateway", "", "the LAN's router (e.g. 192.168.1.1)")
	cmd.Flags().StringVar(&req.Range, "range", "", "addresses for instances, FIRST-LAST (e.g. 192.168.1.100-192.168.1.199)")
	cmd.Flags().StringVar(&req.Zone, "zone", "", "availability zone whose nodes have the bridge (default: the first)")
	cmd.Flags().StringVar(&req.Name, "name", "", "Name tag of the VPC and subnet")
	for _, f := range []string{"bridge", "cidr", "gateway", "range"} {
		cmd.MarkFlagRequired(f)
	}
	cf.add(cmd)
	return cmd
}

func newNetworkLsCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List bridged networks",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			var ns []api.NetworkInfo
			if err := c.Do(cmd.Context(), "GET", api.Prefix+"networks", nil, 0, emptySHA256, &ns); err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "VPC\tSUBNET\tNAME\tBRIDGE\tCIDR\tGATEWAY\tRANGE\tZONE")
			for _, n := range ns {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.VPCID, n.SubnetID, n.Name, n.Bridge, n.CIDR, n.Gateway, n.Range, n.Zone)
			}
			return w.Flush()
		},
	}
	cf.add(cmd)
	return cmd
}

func newNetworkRmCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:     "rm VPC-ID...",
		Aliases: []string{"delete"},
		Short:   "Delete bridged networks that no instance uses",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			for _, id := range args {
				if err := c.Do(cmd.Context(), "DELETE", api.Prefix+"networks/"+url.PathEscape(id), nil, 0, emptySHA256, nil); err != nil {
					return fmt.Errorf("%s: %w", id, err)
				}
			}
			return nil
		},
	}
	cf.add(cmd)
	return cmd
}
