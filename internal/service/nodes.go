package service

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/store"
)

// ReportInterval is how often nodes report when nothing changes.
const ReportInterval = 2 * time.Second

// ConsoleMax is how much console output is kept per instance (EC2: 64 KiB).
const ConsoleMax = 64 * 1024

var nodeNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9.\-]{0,62}$`)

// RegisterNode records a node (re)connecting. A node keeps its ID across
// reconnects by name.
func (s *Service) RegisterNode(ctx context.Context, reg nodeproto.Registration) (nodeproto.RegistrationReply, error) {
	if !nodeNameRE.MatchString(reg.Name) {
		return nodeproto.RegistrationReply{}, model.InvalidParam("name", "node names are 1-63 letters, digits, '.' and '-'")
	}
	if reg.Zone == "" {
		reg.Zone = s.cfg.Zones[0]
	}
	if _, err := s.defaultSubnet("", reg.Zone); err != nil {
		return nodeproto.RegistrationReply{}, err
	}
	if reg.Capacity.VCPUs <= 0 || reg.Capacity.MemoryMiB <= 0 {
		return nodeproto.RegistrationReply{}, model.InvalidParam("capacity", "a node must report vCPUs and memory")
	}
	var node model.Node
	err := s.update(ctx, func(tx store.Tx) error {
		nodes, err := tx.ListNodes()
		if err != nil {
			return err
		}
		node = model.Node{ID: model.NewID(model.PrefixNode), Name: reg.Name, State: model.NodeReady, Created: s.nowMS()}
		for _, n := range nodes {
			if n.Name == reg.Name {
				node = n
			}
		}
		if node.State == model.NodeDown {
			node.State = model.NodeReady
		}
		node.Zone, node.Address, node.Capacity, node.Version, node.LastSeen = reg.Zone, reg.Address, reg.Capacity, reg.Version, s.nowMS()
		return tx.UpsertNode(node)
	})
	if err != nil {
		return nodeproto.RegistrationReply{}, err
	}
	s.log.Info("node registered", "node", node.ID, "name", node.Name, "zone", node.Zone,
		"vcpus", reg.Capacity.VCPUs, "memory_mib", reg.Capacity.MemoryMiB)
	return nodeproto.RegistrationReply{NodeID: node.ID, Zone: node.Zone, ReportInterval: ReportInterval, ConsoleMaxBytes: ConsoleMax}, nil
}

// NodeDesired returns the desired state of a node's instances changed after
// revision since (everything, with Full set, when since is 0 or unknown).
func (s *Service) NodeDesired(ctx context.Context, nodeID string, since int64) (nodeproto.Desired, error) {
	var d nodeproto.Desired
	err := s.view(ctx, func(tx store.Tx) error {
		if _, err := tx.GetNode(nodeID); err != nil {
			return err
		}
		rev, err := tx.Rev()
		if err != nil {
			return err
		}
		d = nodeproto.Desired{Rev: rev}
		q := store.InstanceQuery{NodeID: nodeID, SinceRev: since}
		if since <= 0 || since > rev {
			d.Full = true
			q = store.InstanceQuery{NodeID: nodeID, Live: true}
		}
		insts, err := tx.ListInstances(q)
		if err != nil {
			return err
		}
		images := map[string]model.Image{}
		for _, i := range insts {
			di, err := s.desiredInstance(tx, i, images)
			if err != nil {
				return err
			}
			d.Instances = append(d.Instances, di)
		}
		return nil
	})
	return d, err
}

func (s *Service) desiredInstance(tx store.Tx, i model.Instance, images map[string]model.Image) (nodeproto.DesiredInstance, error) {
	di := nodeproto.DesiredInstance{ID: i.ID, Rev: i.Rev, Power: i.Power, RebootSeq: i.RebootSeq,
		VCPUs: i.VCPUs, MemoryMiB: i.MemoryMiB, ImageID: i.ImageID, StopGrace: s.cfg.StopGrace}
	if i.State == model.StateTerminated {
		di.Power = model.PowerAbsent
		return di, nil
	}
	img, ok := images[i.ImageID]
	if !ok {
		var err error
		// A deregistered image still serves the instances launched from it.
		if img, err = tx.GetImage(i.ImageID); err != nil {
			return di, fmt.Errorf("instance %s: image %s: %w", i.ID, i.ImageID, err)
		}
		images[i.ImageID] = img
	}
	di.Image = img.Manifest
	sn, err := s.defaultSubnet(i.AccountID, i.Zone)
	if err != nil {
		return di, err
	}
	di.Network = nodeproto.Network{
		Bridge:    "clipper0",
		Gateway:   fmt.Sprintf("%s/%d", sn.Gateway, sn.Prefix.Bits()),
		MTU:       s.cfg.MTU,
		DNS:       sn.Gateway.String(),
		PrivateIP: i.PrivateIP,
		MAC:       i.MAC,
	}
	return di, nil
}

// ReportNode applies a node's observations: instances become running,
// stopped or terminated only once their node says so.
func (s *Service) ReportNode(ctx context.Context, nodeID string, r nodeproto.Report) (nodeproto.ReportReply, error) {
	var reply nodeproto.ReportReply
	var changedNode bool
	var changed []string
	err := s.update(ctx, func(tx store.Tx) error {
		changedNode, changed = false, nil
		node, err := tx.GetNode(nodeID)
		if err != nil {
			return err
		}
		node.LastSeen = s.nowMS()
		if r.Capacity.VCPUs > 0 {
			node.Capacity = r.Capacity
		}
		if node.State == model.NodeDown {
			node.State = model.NodeReady
		}
		if err := tx.UpsertNode(node); err != nil {
			return err
		}
		reply.NodeState = node.State
		for _, o := range r.Instances {
			st, power, err := s.applyObservation(tx, nodeID, o)
			if err != nil {
				return err
			}
			changedNode = changedNode || power
			if st {
				changed = append(changed, o.ID)
			}
		}
		return nil
	})
	if err != nil {
		return reply, err
	}
	if changedNode {
		s.notify.NodesChanged(nodeID)
	}
	s.watch.fire(changed...)
	return reply, nil
}

// applyObservation moves one instance along its lifecycle; it returns
// whether the instance changed and whether the node's desired state did.
func (s *Service) applyObservation(tx store.Tx, nodeID string, o nodeproto.ObservedInstance) (changed, power bool, err error) {
	i, err := tx.GetInstance(o.ID)
	if errors.Is(err, model.ErrNotFound) || (err == nil && i.NodeID != nodeID) {
		return false, false, nil // not ours (purged, or moved): the next full sync removes it
	}
	if err != nil {
		return false, false, err
	}
	if len(o.Console) > 0 {
		out := o.Console
		if len(out) > ConsoleMax {
			out = out[len(out)-ConsoleMax:]
		}
		if err := tx.PutConsole(model.Console{InstanceID: i.ID, Output: out, Updated: s.nowMS()}); err != nil {
			return false, false, err
		}
	}
	now := s.nowMS()
	prev, prevPower := i.State, i.Power
	switch {
	case i.State == model.StatePending && o.State == nodeproto.ObsRunning:
		setState(&i, model.StateRunning, now, model.StateReason{})
	case i.State == model.StatePending && o.State == nodeproto.ObsFailed:
		reason := model.StateReason{Code: "Server.InternalError", Message: "Server.InternalError: " + o.Reason}
		if i.LaunchTime.Equal(i.StateChanged) { // a launch that never ran
			setState(&i, model.StateShuttingDown, now, reason)
			i.Power = model.PowerAbsent
		} else { // a start of a stopped instance
			setState(&i, model.StateStopped, now, reason)
			i.Power = model.PowerStopped
		}
	case i.State == model.StateRunning && (o.State == nodeproto.ObsStopped || o.State == nodeproto.ObsAbsent || o.State == nodeproto.ObsFailed):
		reason := model.StateReason{Code: "Client.InstanceInitiatedShutdown", Message: "Client.InstanceInitiatedShutdown: Instance initiated shutdown"}
		if o.State == nodeproto.ObsFailed || o.State == nodeproto.ObsAbsent {
			reason = model.StateReason{Code: "Server.InternalError", Message: "Server.InternalError: " + orDefault(o.Reason, "the VM disappeared from its node")}
		}
		setState(&i, model.StateStopped, now, reason)
		i.TransitionNote = fmt.Sprintf("Instance initiated shutdown (%s GMT)", now.Format("2006-01-02 15:04:05"))
		i.Power = model.PowerStopped
	case i.State == model.StateStopping && (o.State == nodeproto.ObsStopped || o.State == nodeproto.ObsAbsent):
		setState(&i, model.StateStopped, now, i.StateReason)
	case i.State == model.StateShuttingDown && o.State == nodeproto.ObsAbsent:
		setState(&i, model.StateTerminated, now, i.StateReason)
		i.PrivateIP = ""
	}
	if i.State == prev && i.Power == prevPower {
		return false, false, nil
	}
	powerChanged := i.Power != prevPower
	if powerChanged {
		if i.Rev, err = tx.NextRev(); err != nil {
			return false, false, err
		}
	}
	s.log.Info("instance state", "instance", i.ID, "node", nodeID, "from", prev, "to", i.State, "reason", i.StateReason.Code)
	return true, powerChanged, tx.UpdateInstance(i)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// MarkDownNodes marks nodes that stopped reporting as down and returns them.
func (s *Service) MarkDownNodes(ctx context.Context) ([]model.Node, error) {
	var down []model.Node
	err := s.update(ctx, func(tx store.Tx) error {
		down = nil
		nodes, err := tx.ListNodes()
		if err != nil {
			return err
		}
		for _, n := range nodes {
			if n.State != model.NodeDown && s.now().Sub(n.LastSeen) > s.cfg.NodeDownAfter {
				n.State = model.NodeDown
				if err := tx.UpsertNode(n); err != nil {
					return err
				}
				down = append(down, n)
			}
		}
		return nil
	})
	for _, n := range down {
		s.log.Warn("node down: no report", "node", n.ID, "name", n.Name, "last_seen", n.LastSeen)
	}
	return down, err
}

// Nodes lists the nodes with their usage.
func (s *Service) Nodes(ctx context.Context) ([]model.Node, map[string]model.Capacity, error) {
	var nodes []model.Node
	var usage map[string]model.Capacity
	err := s.view(ctx, func(tx store.Tx) error {
		var err error
		if nodes, err = tx.ListNodes(); err != nil {
			return err
		}
		usage, err = tx.NodeUsage()
		return err
	})
	return nodes, usage, err
}
