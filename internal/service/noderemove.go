package service

import (
	"context"
	"errors"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/store"
)

// RemoveNode takes a node out of the cloud by name: it is marked down, so
// the scheduler places nothing on it, and stays down (its certificates are
// revoked by the caller, so it cannot register again without rejoining).
// A node that still hosts live instances is refused unless force. found is
// false for a node that never registered (it may have joined only).
// The store has no node deletion yet, so the row remains, down.
func (s *Service) RemoveNode(ctx context.Context, name string, force bool) (found bool, err error) {
	var live int
	err = s.update(ctx, func(tx store.Tx) error {
		node, err := tx.GetNodeByName(name)
		if errors.Is(err, model.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		insts, err := tx.ListInstances(store.InstanceQuery{NodeID: node.ID, Live: true})
		if err != nil {
			return err
		}
		if live = len(insts); live > 0 && !force {
			return model.Errorf(model.KindIncorrectState, model.ResNode, name,
				"Node %s still hosts %d live instance(s); terminate or move them first, or force the removal", name, live)
		}
		node.State = model.NodeDown
		return tx.UpsertNode(node)
	})
	if err == nil && found {
		s.log.Info("node removed", "name", name, "live_instances", live)
	}
	return found, err
}
