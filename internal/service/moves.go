package service

import (
	"context"
	"errors"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/scheduler"
	"github.com/clipper-cloud/clipper/internal/store"
)

// Live migration ("move"). The controller drives it through the nodes'
// desired state, one step per report, so a restart of either side resumes
// it:
//
//  1. MoveInstance picks a destination and records it (MoveTo): the
//     instance's vCPUs, memory and disk are held there from now on.
//  2. The destination prepares the instance (image, port, groups) and starts
//     its VM waiting for the state; it reports where (ObsIncoming, MoveAddr).
//  3. The source is told that address and sends the VM's state there; once
//     the copy completed it reports ObsMigrated.
//  4. The instance now lives on the destination (NodeID), its peers learn
//     its new node, and the source deletes its paused copy (DropNode).
//
// The instance stays running throughout, as on EC2. A node that cannot do
// its part (MoveError), a destination that fails, a node that goes down or
// a stop or termination call the move off: the destination drops its copy
// and the instance stays where it was.

// Move is one instance's move.
type Move struct {
	InstanceID string `json:"instance_id"`
	From       string `json:"from"` // node names
	To         string `json:"to,omitempty"`
	// Error says why the instance could not move (drains list them).
	Error string `json:"error,omitempty"`
}

// MoveInstance starts moving a running instance live to the node named to,
// or to the node the scheduler picks when to is empty.
func (s *Service) MoveInstance(ctx context.Context, id, to string) (Move, error) {
	if !model.ValidID(model.PrefixInstance, id) {
		return Move{}, model.Malformed(model.ResInstance, id)
	}
	var mv Move
	var notify []string
	err := s.update(ctx, func(tx store.Tx) error {
		i, err := tx.GetInstance(id)
		if err != nil {
			return err
		}
		mv, notify, err = s.startMove(tx, i, to)
		return err
	})
	if err != nil {
		return Move{}, err
	}
	s.notify.NodesChanged(notify...)
	s.log.Info("instance moving", "instance", id, "from", mv.From, "to", mv.To)
	return mv, nil
}

// DrainNode marks the node named name draining and starts moving every
// running instance off it. Instances that cannot move (stopped ones, those
// no other node has room for) stay, each listed with the reason.
func (s *Service) DrainNode(ctx context.Context, name string) (model.Node, []Move, error) {
	var node model.Node
	var moves []Move
	var notify []string
	err := s.update(ctx, func(tx store.Tx) error {
		moves, notify = nil, nil
		var err error
		if node, err = tx.GetNodeByName(name); err != nil {
			return err
		}
		node.Schedule = model.NodeDraining
		if err := tx.UpsertNode(node); err != nil {
			return err
		}
		insts, err := tx.ListInstances(store.InstanceQuery{NodeID: node.ID, Live: true})
		if err != nil {
			return err
		}
		for _, i := range insts {
			if i.MoveTo != "" {
				moves = append(moves, Move{InstanceID: i.ID, From: node.Name, To: s.nodeName(tx, i.MoveTo)})
				continue
			}
			mv, n, err := s.startMove(tx, i, "")
			if err != nil {
				if model.KindOf(err) == model.KindInternal {
					return err
				}
				mv = Move{InstanceID: i.ID, From: node.Name, Error: errorMessage(err)}
			}
			moves = append(moves, mv)
			notify = append(notify, n...)
		}
		return nil
	})
	if err != nil {
		return model.Node{}, nil, err
	}
	s.notify.NodesChanged(dedupe(notify)...)
	s.log.Info("node draining", "node", node.ID, "name", name, "instances", len(moves))
	return node, moves, nil
}

func errorMessage(err error) string {
	var me *model.Error
	if errors.As(err, &me) && me.Msg != "" {
		return me.Msg
	}
	return err.Error()
}

func (s *Service) nodeName(tx store.Tx, id string) string {
	n, err := tx.GetNode(id)
	if err != nil {
		return id
	}
	return n.Name
}

// startMove checks that i can move, picks its destination and records the
// move. It returns the nodes to wake.
func (s *Service) startMove(tx store.Tx, i model.Instance, to string) (Move, []string, error) {
	mv := Move{InstanceID: i.ID}
	switch {
	case i.State != model.StateRunning:
		return mv, nil, model.Errorf(model.KindIncorrectState, model.ResInstance, i.ID,
			"The instance '%s' is %s; only running instances move.", i.ID, i.State)
	case i.MoveTo != "":
		return mv, nil, model.Errorf(model.KindIncorrectState, model.ResInstance, i.ID,
			"The instance '%s' is moving already.", i.ID)
	case i.DropNode != "":
		return mv, nil, model.Errorf(model.KindIncorrectState, model.ResInstance, i.ID,
			"The instance '%s' has just moved, and its former node has not yet let go of it; try again in a moment.", i.ID)
	}
	src, err := tx.GetNode(i.NodeID)
	if err != nil {
		return mv, nil, err
	}
	mv.From = src.Name
	if src.State == model.NodeDown {
		return mv, nil, model.Errorf(model.KindIncorrectState, model.ResInstance, i.ID,
			"The node %s of instance '%s' is down.", src.Name, i.ID)
	}
	dst, err := s.pickDestination(tx, i, src, to)
	if err != nil {
		return mv, nil, err
	}
	mv.To = dst.Name
	i.MoveTo, i.MoveAddr = dst.ID, ""
	if i.Rev, err = tx.NextRev(); err != nil {
		return mv, nil, err
	}
	if err := tx.UpdateInstance(i); err != nil {
		return mv, nil, err
	}
	return mv, []string{src.ID, dst.ID}, nil
}

// pickDestination finds the node a moving instance goes to: a ready node of
// its zone, other than its own, with an underlay address and room for it;
// to, when set, names the only node considered.
func (s *Service) pickDestination(tx store.Tx, i model.Instance, src model.Node, to string) (model.Node, error) {
	all, cands, err := s.schedulerNodes(tx)
	if err != nil {
		return model.Node{}, err
	}
	byID := map[string]model.Node{}
	var offered []*scheduler.Node
	now := s.now()
	for k, n := range all {
		byID[n.ID] = n
		cands[k].Ready = s.schedulable(n, now) && n.ID != src.ID && n.Address != ""
		if to != "" && n.Name != to {
			continue
		}
		if to != "" {
			if err := destinationProblem(n, src, cands[k].Ready, i); err != nil {
				return model.Node{}, err
			}
		}
		offered = append(offered, cands[k])
	}
	if to != "" && len(offered) == 0 {
		return model.Node{}, model.NotFound(model.ResNode, to)
	}
	placed, err := scheduler.Place(offered, scheduler.Request{Zone: i.Zone, MinCount: 1, MaxCount: 1,
		Size: scheduler.Resources{VCPUs: i.VCPUs, MemoryMiB: i.MemoryMiB, DiskMiB: int64(i.DiskGiB) * 1024}},
		s.ratios())
	var ce *scheduler.CapacityError
	if errors.As(err, &ce) {
		return model.Node{}, model.Errorf(model.KindInsufficientCapacity, model.ResInstance, i.ID,
			"No node can take instance '%s' in %s: %s", i.ID, i.Zone, ce.Error())
	}
	if err != nil {
		return model.Node{}, err
	}
	return byID[placed[0]], nil
}

// destinationProblem says why the operator's chosen node cannot take i.
func destinationProblem(n, src model.Node, ready bool, i model.Instance) error {
	bad := func(format string, args ...any) error {
		return model.Errorf(model.KindInvalidParameter, model.ResNode, n.Name, format, args...)
	}
	switch {
	case n.ID == src.ID:
		return bad("The instance '%s' runs on node %s already.", i.ID, n.Name)
	case n.Zone != i.Zone:
		return bad("Node %s is in %s, the instance in %s.", n.Name, n.Zone, i.Zone)
	case n.Address == "":
		return bad("Node %s has no underlay address (clipper node --address) for a migration to arrive on.", n.Name)
	case !ready:
		return bad("Node %s is %s.", n.Name, n.Shown())
	}
	return nil
}

// moveObservation applies what a node reports about its part in a move of
// i. It returns whether it handled the observation (the ordinary lifecycle
// does not apply then).
func (s *Service) moveObservation(tx store.Tx, nodeID string, i *model.Instance, o nodeproto.ObservedInstance) (bool, observed, error) {
	var res observed
	switch {
	case nodeID == i.DropNode && nodeID != i.NodeID:
		if o.State == nodeproto.ObsAbsent {
			i.DropNode = ""
			return true, res, tx.UpdateInstance(*i)
		}
		return true, res, nil
	case nodeID == i.MoveTo:
		switch {
		case o.MoveError != "" || o.State == nodeproto.ObsFailed:
			return true, res, s.abortMove(tx, i, "the destination failed: "+orDefault(o.MoveError, o.Reason), &res)
		case o.State == nodeproto.ObsIncoming && o.MoveAddr != "" && o.MoveAddr != i.MoveAddr:
			i.MoveAddr = o.MoveAddr
			res.notify = append(res.notify, i.NodeID)
			return true, res, s.bumpInstance(tx, i)
		}
		return true, res, nil
	case nodeID != i.NodeID:
		return true, res, nil // a node with no part in it
	case i.MoveTo == "":
		return false, res, nil
	case o.MoveError != "":
		return true, res, s.abortMove(tx, i, "the source failed: "+o.MoveError, &res)
	case o.State == nodeproto.ObsMigrated && i.MoveAddr != "":
		from, to := i.NodeID, i.MoveTo
		i.NodeID, i.DropNode, i.MoveTo, i.MoveAddr = to, from, "", ""
		peers, err := tx.VPCNodes([]string{i.VPCID})
		if err != nil {
			return true, res, err
		}
		res.notify = append(append(res.notify, from, to), peers...)
		s.log.Info("instance moved", "instance", i.ID, "from", from, "to", to)
		return true, res, s.bumpInstance(tx, i)
	}
	return false, res, nil
}

// desiredMove adds to di the part nodeID takes in moving i, if i moves.
func desiredMove(tx store.Tx, nodeID string, i model.Instance, di *nodeproto.DesiredInstance) error {
	switch {
	case i.MoveTo == nodeID:
		con, err := tx.GetConsole(i.ID)
		if err != nil && model.KindOf(err) != model.KindNotFound {
			return err
		}
		src, err := tx.GetNode(i.NodeID)
		if err != nil {
			return err
		}
		di.Move = &nodeproto.Move{Role: nodeproto.MoveIn, Console: con.Output, From: src.Name}
		// The elastic IP stays with the source, which runs the VM, until
		// the handover: two nodes must not answer ARP for it.
		di.Network.PublicIP = ""
	case i.MoveTo != "":
		di.Move = &nodeproto.Move{Role: nodeproto.MoveOut, Addr: i.MoveAddr}
	}
	return nil
}

// abortMove calls a move off: the instance stays on its node, and the
// destination drops what it prepared.
func (s *Service) abortMove(tx store.Tx, i *model.Instance, why string, res *observed) error {
	s.log.Warn("instance move called off", "instance", i.ID, "node", i.NodeID, "to", i.MoveTo, "why", why)
	res.notify = append(res.notify, i.NodeID, callOffMove(i))
	return s.bumpInstance(tx, i)
}

// callOffMove ends i's move, if it is moving: the destination is to drop
// its copy. It returns that node, "" when i was not moving.
func callOffMove(i *model.Instance) string {
	dst := i.MoveTo
	if dst != "" {
		i.DropNode, i.MoveTo, i.MoveAddr = dst, "", ""
	}
	return dst
}

// callOffUnlessRunning calls off the move of an instance that stopped
// running (a stop, a termination, a guest that powered off): only running
// instances move. It returns the destination to wake, or "".
func callOffUnlessRunning(i *model.Instance) string {
	if i.State == model.StateRunning {
		return ""
	}
	return callOffMove(i)
}

func (s *Service) bumpInstance(tx store.Tx, i *model.Instance) error {
	var err error
	if i.Rev, err = tx.NextRev(); err != nil {
		return err
	}
	return tx.UpdateInstance(*i)
}

// abortMovesOf calls off the moves a down node takes part in and returns
// the nodes to wake.
func (s *Service) abortMovesOf(tx store.Tx, nodeID string) ([]string, error) {
	insts, err := tx.ListInstances(store.InstanceQuery{Involving: nodeID, Live: true})
	if err != nil {
		return nil, err
	}
	var res observed
	for k := range insts {
		if i := &insts[k]; i.MoveTo != "" {
			if err := s.abortMove(tx, i, "a node went down", &res); err != nil {
				return nil, err
			}
		}
	}
	return res.notify, nil
}
