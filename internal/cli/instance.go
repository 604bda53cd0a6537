package cli

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/clipper-cloud/clipper/internal/api"
	"github.com/clipper-cloud/clipper/internal/service"
)

func newInstanceCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "instance", Short: "Operator actions on instances (the AWS CLI does the rest)"}
	cmd.AddCommand(newInstanceMoveCmd())
	return cmd
}

func newInstanceMoveCmd() *cobra.Command {
	var cf clientFlags
	var req api.MoveRequest
	cmd := &cobra.Command{
		Use:   "move INSTANCE-ID [--node NAME]",
		Short: "Move a running instance to another node without stopping it (live migration)",
		Long: `Move a running instance to another node of its zone while it runs: its
memory, device state and root disk are copied over, it keeps its
addresses, and a short pause is all its users see. --node names the
destination; without it the scheduler picks the node with the most room.
The command returns once the move has started; describe-instances and
clipper node ls show where the instance is.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			body, _ := json.Marshal(req)
			sum := sha256.Sum256(body)
			var mv service.Move
			path := api.Prefix + "instances/" + url.PathEscape(args[0]) + "/move"
			if err := c.Do(cmd.Context(), "POST", path, bytes.NewReader(body), int64(len(body)), hex.EncodeToString(sum[:]), &mv); err != nil {
				return err
			}
			printMoves(cmd.OutOrStdout(), []service.Move{mv})
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Node, "node", "", "destination node (default: the scheduler's choice)")
	cf.add(cmd)
	return cmd
}

// printMoves prints one line per move: "i-... moving a -> b" or why not.
func printMoves(w io.Writer, moves []service.Move) {
	for _, m := range moves {
		if m.Error != "" {
			fmt.Fprintf(w, "%s stays on %s: %s\n", m.InstanceID, m.From, m.Error)
			continue
		}
		fmt.Fprintf(w, "%s moving %s -> %s\n", m.InstanceID, m.From, m.To)
	}
}
