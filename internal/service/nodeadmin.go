package service

import (
	"context"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/store"
)

// SetNodeSchedule records the operator's say over a node, by name:
// NodeCordoned or NodeDraining keep new instances off it, NodeReady (or "")
// makes it schedulable again. Instances already on the node keep running
// (DrainNode is the one that also moves them off).
func (s *Service) SetNodeSchedule(ctx context.Context, name string, to model.NodeState) (model.Node, error) {
	switch to {
	case model.NodeReady:
		to = ""
	case model.NodeCordoned, model.NodeDraining:
	default:
		return model.Node{}, model.InvalidParam("state", "A node can be cordoned, draining or ready, not %q", to)
	}
	var node model.Node
	err := s.update(ctx, func(tx store.Tx) error {
		var err error
		if node, err = tx.GetNodeByName(name); err != nil {
			return err
		}
		node.Schedule = to
		return tx.UpsertNode(node)
	})
	if err == nil {
		s.log.Info("node schedule changed", "node", node.ID, "name", name, "state", node.Shown())
	}
	return node, err
}
