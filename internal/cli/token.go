package cli

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage join tokens for nodes"}
	cmd.AddCommand(newTokenCreateCmd(), newTokenLsCmd(), newTokenRmCmd())
	return cmd
}

func newTokenCreateCmd() *cobra.Command {
	var cf clientFlags
	var ttl time.Duration
	var output string
	cmd := &cobra.Command{
		Use:   "create [--ttl 24h]",
		Short: "Create a join token and print it",
		Long: `Create a join token. A new node joins with it once:

  clipper node --controller https://CONTROLLER:8774 --token TOKEN

The token also pins the controller's CA, so the node trusts nothing else.
Any number of nodes may use it until it expires; --ttl 0 makes a token that
never expires (like DATA-DIR/join-token). Needs the admin credentials.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ttl < 0 {
				return fmt.Errorf("--ttl must not be negative")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			out, err := c.CreateJoinToken(cmd.Context(), ttl)
			if err != nil {
				return err
			}
			switch output {
			case "json":
				return json.NewEncoder(cmd.OutOrStdout()).Encode(out)
			case "text":
				fmt.Fprintln(cmd.OutOrStdout(), out.Token)
				return nil
			}
			return fmt.Errorf("--output must be text or json")
		},
	}
	cf.add(cmd)
	cmd.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid (0: no expiry)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

func newTokenLsCmd() *cobra.Command {
	var cf clientFlags
	var output string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List join tokens (IDs and expiry; the secrets are not kept)",
		Long: `List the join tokens that have not expired. The controller keeps only a hash
of each secret, so a token cannot be shown again: its ID (the second field of
clipper-join.<id>.<secret>.<pin>) names it. FILE marks the token in the
controller's DATA-DIR/join-token. Needs the admin credentials.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("--output must be text or json")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			ts, err := c.JoinTokens(cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(ts)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tCREATED\tEXPIRES\tFILE")
			for _, t := range ts {
				exp, file := "never", ""
				if !t.Expires.IsZero() {
					exp = t.Expires.UTC().Format(time.RFC3339)
				}
				if t.File {
					file = "join-token"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", t.ID, t.Created.UTC().Format(time.RFC3339), exp, file)
			}
			return w.Flush()
		},
	}
	cf.add(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

func newTokenRmCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:     "rm ID...",
		Aliases: []string{"delete", "revoke"},
		Short:   "Revoke join tokens",
		Long: `Revoke join tokens by ID (see clipper token ls): no node can join with them
any more. Nodes that already joined keep their certificates (remove those with
clipper node rm). Revoking the token in the controller's DATA-DIR/join-token
puts a new one there. Needs the admin credentials.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			for _, id := range args {
				out, err := c.DeleteJoinToken(cmd.Context(), id)
				if err != nil {
					return fmt.Errorf("%s: %w", id, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "token %s revoked\n", out.ID)
				if out.NewFileToken != "" {
					fmt.Fprintf(cmd.OutOrStdout(), "the controller's join-token file now holds token %s\n", out.NewFileToken)
				}
			}
			return nil
		},
	}
	cf.add(cmd)
	return cmd
}
