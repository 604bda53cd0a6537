package agent

import (
	"context"
	"slices"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

// fwdState is the port forward list the network last accepted. Only the
// poll loop touches it.
type fwdState struct {
	applied bool
	list    []nodeproto.Forward
}

// applyForwards hands the network the node's forwards (every answer
// carries the whole list) when they differ from what it last accepted. A
// failure is logged and retried with the next answer.
func (a *Agent) applyForwards(ctx context.Context, fs []nodeproto.Forward) {
	if a.fwd.applied && slices.Equal(a.fwd.list, fs) {
		return
	}
	if err := a.cfg.Network.SetForwards(ctx, fs); err != nil {
		a.log.Error("apply port forwards", "error", err)
		return
	}
	a.fwd = fwdState{applied: true, list: slices.Clone(fs)}
}
