package cli

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage join tokens for nodes"}
	cmd.AddCommand(newTokenCreateCmd())
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
