package service

import (
	"context"
	"errors"
	"fmt"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/store"
)

// NodeRemoval is what removing a node did.
type NodeRemoval struct {
	Found      bool     // a node of that name had registered
	Terminated []string // instances lost with the node (force only)
	Forwards   []string // port forwards the node carried, deleted
}

// RemovedReason is the state reason of instances lost with a removed node.
func RemovedReason(node string) model.StateReason {
	return model.StateReason{Code: "Server.InternalError",
		Message: fmt.Sprintf("Server.InternalError: the node %s hosting the instance was removed from the cloud (clipper node rm --force)", node)}
}

// RemoveNode takes a node out of the cloud by name (its certificates are
// revoked by the caller). Its record is deleted: nothing is placed on it,
// and a machine that joins under the name later is a new node. A node
// that still hosts live instances is refused unless force; with force they
// are terminated, with a stateReason that names the node: their VMs are
// beyond the controller's reach (the node's agent is refused from now on),
// and a node that joins again under the name removes what it still runs,
// as it does for any VM the controller does not list. The port forwards
// the node carried are deleted with it. Found is false for a node that
// never registered (it may have joined only).
func (s *Service) RemoveNode(ctx context.Context, name string, force bool) (NodeRemoval, error) {
	var out NodeRemoval
	var notify []string
	err := s.update(ctx, func(tx store.Tx) error {
		out, notify = NodeRemoval{}, nil
		node, err := tx.GetNodeByName(name)
		if errors.Is(err, model.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		out.Found = true
		if err := s.forgetMovesOf(tx, node.ID, &notify); err != nil {
			return err
		}
		insts, err := tx.ListInstances(store.InstanceQuery{NodeID: node.ID, Live: true})
		if err != nil {
			return err
		}
		if live := len(insts); live > 0 && !force {
			return model.Errorf(model.KindIncorrectState, model.ResNode, name,
				"Node %s still hosts %d live instance(s); terminate them first, or force the removal (which terminates them)", name, live)
		}
		now := s.nowMS()
		for k := range insts {
			i := &insts[k]
			peers, err := terminated(tx, i, now, RemovedReason(name))
			if err != nil {
				return err
			}
			i.TransitionNote = fmt.Sprintf("Node removed (%s GMT)", now.Format("2006-01-02 15:04:05"))
			if err := tx.UpdateInstance(*i); err != nil {
				return err
			}
			notify = append(notify, peers...)
			out.Terminated = append(out.Terminated, i.ID)
		}
		fws, err := tx.NodeForwards(node.ID)
		if err != nil {
			return err
		}
		for _, f := range fws {
			if err := tx.DeleteForward(f.ID); err != nil {
				return err
			}
			out.Forwards = append(out.Forwards, f.ID)
		}
		return tx.DeleteNode(node.ID)
	})
	if err != nil {
		return NodeRemoval{}, err
	}
	if out.Found {
		s.notify.NodesChanged(dedupe(notify)...)
		s.watch.fire(out.Terminated...)
		s.log.Info("node removed", "name", name, "terminated", out.Terminated, "forwards", out.Forwards)
	}
	return out, nil
}

// NodeNameInUse reports whether a registered node has the name.
func (s *Service) NodeNameInUse(ctx context.Context, name string) (bool, error) {
	var used bool
	err := s.view(ctx, func(tx store.Tx) error {
		_, err := tx.GetNodeByName(name)
		if errors.Is(err, model.ErrNotFound) {
			return nil
		}
		used = err == nil
		return err
	})
	return used, err
}

// forgetMovesOf calls off the moves a removed node takes part in, and
// forgets the copies it was to drop: it will never report letting go.
func (s *Service) forgetMovesOf(tx store.Tx, nodeID string, notify *[]string) error {
	w, err := s.abortMovesOf(tx, nodeID)
	if err != nil {
		return err
	}
	*notify = append(*notify, w...)
	left, err := tx.ListInstances(store.InstanceQuery{Involving: nodeID, Live: true})
	if err != nil {
		return err
	}
	for _, i := range left {
		if i.DropNode == nodeID {
			i.DropNode = ""
			if err := tx.UpdateInstance(i); err != nil {
				return err
			}
		}
	}
	return nil
}
