package service

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/store"
)

// ReportInterval is how often nodes report when nothing changes.
const ReportInterval = 2 * time.Second

// HealthCheckInterval is how often the controller looks for nodes that
// stopped reporting (MarkDownNodes). The default NodeDownAfter (8 s) plus
// this makes a silent node down within 9 s of its last report, inside the
// 10 s the product promises, while four reports in a row may be lost.
const HealthCheckInterval = 500 * time.Millisecond

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
	if !s.knownZone(reg.Zone) {
		return nodeproto.RegistrationReply{}, model.Errorf(model.KindInvalidParameter, model.ResZone, reg.Zone,
			"Unknown availability zone %q (the controller has %s)", reg.Zone, strings.Join(s.cfg.Zones, ", "))
	}
	if reg.Capacity.VCPUs <= 0 || reg.Capacity.MemoryMiB <= 0 {
		return nodeproto.RegistrationReply{}, model.InvalidParam("capacity", "a node must report vCPUs and memory")
	}
	var node model.Node
	err := s.update(ctx, func(tx store.Tx) error {
		var err error
		node, err = tx.GetNodeByName(reg.Name)
		if errors.Is(err, model.ErrNotFound) {
			node, err = model.Node{ID: model.NewID(model.PrefixNode), Name: reg.Name, State: model.NodeReady, Created: s.nowMS()}, nil
		}
		if err != nil {
			return err
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

func (s *Service) knownZone(z string) bool {
	for _, k := range s.cfg.Zones {
		if k == z {
			return true
		}
	}
	return false
}

// NodeDesired returns the desired state of a node's instances changed after
// revision since (everything, with Full set, when since is 0 or unknown),
// with the security groups and peers those instances need.
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
		q := store.InstanceQuery{Involving: nodeID, SinceRev: since}
		if since <= 0 || since > rev {
			d.Full, since = true, 0
			q = store.InstanceQuery{Involving: nodeID, Live: true}
		}
		insts, err := tx.ListInstances(q)
		if err != nil {
			return err
		}
		if err := s.decorate(tx, "", insts); err != nil {
			return err
		}
		dc := &desiredCache{images: map[string]model.Image{}, subnets: map[string]model.Subnet{}, vpcs: map[string]model.VPC{},
			keys: map[string]string{}, groupNames: map[string]string{}, nodeAddrs: map[string]string{}}
		var movingIn []model.Instance
		for _, i := range insts {
			if i.NodeID != nodeID && i.MoveTo != nodeID {
				// The node must delete its copy (DropNode).
				d.Instances = append(d.Instances, nodeproto.DesiredInstance{ID: i.ID, Rev: i.Rev, Power: model.PowerAbsent})
				continue
			}
			di, err := s.desiredInstance(tx, i, dc)
			if err != nil {
				return err
			}
			if err := desiredMove(tx, nodeID, i, &di); err != nil {
				return err
			}
			if i.MoveTo == nodeID {
				movingIn = append(movingIn, i)
			}
			d.Instances = append(d.Instances, di)
		}
		if err := s.desiredNetwork(tx, nodeID, since, &d, dc, movingIn); err != nil {
			return err
		}
		fw, err := tx.NodeForwards(nodeID)
		if err != nil {
			return err
		}
		d.Forwards = make([]nodeproto.Forward, 0, len(fw))
		for _, f := range fw {
			d.Forwards = append(d.Forwards, nodeproto.Forward{ID: f.ID, Protocol: f.Protocol, ListenIP: f.ListenIP,
				ListenPort: f.ListenPort, TargetIP: f.TargetIP, TargetPort: f.TargetPort})
		}
		return nil
	})
	return d, err
}

// desiredNetwork adds the groups and peers a node needs: those of its
// instances and of the instances moving to it.
func (s *Service) desiredNetwork(tx store.Tx, nodeID string, since int64, d *nodeproto.Desired, dc *desiredCache, movingIn []model.Instance) error {
	groupIDs, err := tx.NodeGroups(nodeID)
	if err != nil {
		return err
	}
	for _, i := range movingIn {
		groupIDs = append(groupIDs, i.Groups...)
	}
	groupIDs = dedupe(groupIDs)
	groups, err := tx.GroupsByID(groupIDs)
	if err != nil {
		return err
	}
	var changed []string
	for _, g := range groups {
		if g.Rev > since {
			changed = append(changed, g.ID)
		}
	}
	rules, err := tx.Rules("", changed)
	if err != nil {
		return err
	}
	byGroup := map[string][]model.GroupRule{}
	for _, r := range rules {
		byGroup[r.GroupID] = append(byGroup[r.GroupID], r)
	}
	for _, g := range groups {
		if g.Rev <= since {
			continue
		}
		sg := nodeproto.SecurityGroup{ID: g.ID, Rev: g.Rev, Ingress: []nodeproto.Rule{}, Egress: []nodeproto.Rule{}}
		for _, r := range byGroup[g.ID] {
			nr := nodeproto.Rule{Protocol: r.Protocol, FromPort: r.FromPort, ToPort: r.ToPort}
			if r.CIDR != "" {
				nr.CIDRs = []string{r.CIDR}
			} else {
				nr.Groups = []string{r.PeerGroup}
			}
			if r.Egress {
				sg.Egress = append(sg.Egress, nr)
			} else {
				sg.Ingress = append(sg.Ingress, nr)
			}
		}
		d.Groups = append(d.Groups, sg)
	}
	vpcs, err := tx.NodeVPCs(nodeID)
	if err != nil {
		return err
	}
	for _, i := range movingIn {
		vpcs = append(vpcs, i.VPCID)
	}
	vpcs = dedupe(vpcs)
	peers, err := tx.VPCInstances(vpcs, since)
	if err != nil {
		return err
	}
	ids := make([]string, len(peers))
	for i := range peers {
		ids[i] = peers[i].ID
	}
	pg, err := tx.InstanceGroups(ids)
	if err != nil {
		return err
	}
	for _, p := range peers {
		peer := nodeproto.Peer{ID: p.ID, VPCID: p.VPCID, IP: p.PrivateIP, MAC: p.MAC,
			Groups: pg[p.ID], Gone: p.State == model.StateTerminated || p.PrivateIP == ""}
		if peer.Node, err = dc.nodeAddress(tx, p.NodeID); err != nil {
			return err
		}
		v, err := dc.vpc(tx, p.VPCID)
		if err != nil {
			return err
		}
		peer.VNI = v.VNI
		d.Peers = append(d.Peers, peer)
	}
	return nil
}

// nodeAddress returns the underlay address of a node ("" for none).
func (dc *desiredCache) nodeAddress(tx store.Tx, nodeID string) (string, error) {
	if nodeID == "" {
		return "", nil
	}
	a, ok := dc.nodeAddrs[nodeID]
	if !ok {
		n, err := tx.GetNode(nodeID)
		if err != nil && model.KindOf(err) != model.KindNotFound {
			return "", err
		}
		a = n.Address
		dc.nodeAddrs[nodeID] = a
	}
	return a, nil
}

func (dc *desiredCache) vpc(tx store.Tx, id string) (model.VPC, error) {
	v, ok := dc.vpcs[id]
	if !ok {
		var err error
		if v, err = tx.GetVPC(id); err != nil {
			return v, err
		}
		dc.vpcs[id] = v
	}
	return v, nil
}

// GatewayMAC is the MAC of a network's gateway on every node: locally
// administered, unicast, derived from the VPC ID.
func GatewayMAC(vpcID string) string {
	h := sha256.Sum256([]byte("gateway/" + vpcID))
	return fmt.Sprintf("06:%02x:%02x:%02x:%02x:%02x", h[0], h[1], h[2], h[3], h[4])
}

// desiredCache memoises lookups while building one desired-state answer.
type desiredCache struct {
	images     map[string]model.Image
	subnets    map[string]model.Subnet
	vpcs       map[string]model.VPC
	keys       map[string]string // account/name -> OpenSSH key
	groupNames map[string]string
	nodeAddrs  map[string]string // node ID -> underlay address
}

func (s *Service) desiredInstance(tx store.Tx, i model.Instance, dc *desiredCache) (nodeproto.DesiredInstance, error) {
	di := nodeproto.DesiredInstance{ID: i.ID, Rev: i.Rev, Power: i.Power, RebootSeq: i.RebootSeq,
		VCPUs: i.VCPUs, MemoryMiB: i.MemoryMiB, DiskGiB: i.DiskGiB, ImageID: i.ImageID, StopGrace: s.cfg.StopGrace}
	if i.State == model.StateTerminated {
		di.Power = model.PowerAbsent
		return di, nil
	}
	img, ok := dc.images[i.ImageID]
	if !ok {
		var err error
		// A deregistered image still serves the instances launched from it.
		if img, err = tx.GetImage(i.ImageID); err != nil {
			return di, fmt.Errorf("instance %s: image %s: %w", i.ID, i.ImageID, err)
		}
		dc.images[i.ImageID] = img
	}
	di.Image = img.Manifest
	sn, ok := dc.subnets[i.SubnetID]
	if !ok {
		var err error
		if sn, err = tx.GetSubnet(i.SubnetID); err != nil {
			return di, fmt.Errorf("instance %s: subnet %s: %w", i.ID, i.SubnetID, err)
		}
		dc.subnets[i.SubnetID] = sn
	}
	v, err := dc.vpc(tx, i.VPCID)
	if err != nil {
		return di, fmt.Errorf("instance %s: vpc %s: %w", i.ID, i.VPCID, err)
	}
	prefix := netip.MustParsePrefix(sn.CIDR)
	gw := gateway(prefix)
	if a, err := netip.ParseAddr(sn.Gateway); err == nil {
		gw = a
	}
	mtu := s.cfg.MTU
	if v.Uplink != "" {
		mtu = 0 // a LAN without encapsulation: the node's host bridge's MTU
	}
	di.Network = nodeproto.Network{
		VPCID:      i.VPCID,
		Bridge:     BridgeName(i.VPCID),
		Gateway:    fmt.Sprintf("%s/%d", gw, prefix.Bits()),
		MTU:        mtu,
		DNS:        gw.String(),
		PrivateIP:  i.PrivateIP,
		MAC:        i.MAC,
		Groups:     i.Groups,
		VNI:        v.VNI,
		GatewayMAC: GatewayMAC(i.VPCID),
		Uplink:     v.Uplink,
		PublicIP:   i.PublicIP, // decorate read the elastic IPs
	}
	md, err := s.metadataDoc(tx, i, sn, v, dc)
	if err != nil {
		return di, err
	}
	di.Metadata = md
	di.MetadataOptions = nodeproto.MetadataOptions{HTTPTokens: i.Metadata.HTTPTokens, HTTPEndpoint: i.Metadata.HTTPEndpoint,
		HopLimit: i.Metadata.HopLimit, Tags: i.Metadata.Tags == "enabled"}
	return di, nil
}

// metadataDoc builds what the node's metadata service serves.
func (s *Service) metadataDoc(tx store.Tx, i model.Instance, sn model.Subnet, v model.VPC, dc *desiredCache) (nodeproto.InstanceMetadata, error) {
	md := nodeproto.InstanceMetadata{
		AccountID: i.AccountID, Region: s.cfg.Region, Zone: i.Zone, ImageID: i.ImageID, InstanceID: i.ID,
		InstanceType: i.InstanceType, ReservationID: i.ReservationID, LaunchIndex: i.LaunchIndex, LaunchTime: i.LaunchTime,
		Hostname: PrivateDNSName(i.PrivateIP), LocalIPv4: i.PrivateIP, MAC: i.MAC, VPCID: i.VPCID, VPCCIDR: v.CIDR,
		SubnetID: i.SubnetID, SubnetCIDR: sn.CIDR, InterfaceID: derivedID(model.PrefixENI, i.ID), GroupIDs: i.Groups,
		UserData: i.UserData, PublicIPv4: i.PublicIP,
	}
	for _, g := range i.Groups {
		name, ok := dc.groupNames[g]
		if !ok {
			grp, err := tx.GetGroup(g)
			if err != nil {
				return md, err
			}
			name = grp.Name
			dc.groupNames[g] = name
		}
		md.SecurityGroups = append(md.SecurityGroups, name)
	}
	if i.KeyName != "" {
		k := i.AccountID + "/" + i.KeyName
		pub, ok := dc.keys[k]
		if !ok {
			if kp, err := tx.GetKeyPair(i.AccountID, i.KeyName); err == nil {
				pub = kp.PublicKey
			}
			dc.keys[k] = pub
		}
		if pub != "" {
			md.PublicKeys = []nodeproto.PublicKey{{Name: i.KeyName, OpenSSH: pub}}
		}
	}
	if i.Metadata.Tags == "enabled" && len(i.Tags) > 0 {
		md.Tags = map[string]string{}
		for _, t := range i.Tags {
			md.Tags[t.Key] = t.Value
		}
	}
	return md, nil
}

// ReportNode applies a node's observations: instances become running,
// stopped or terminated only once their node says so.
func (s *Service) ReportNode(ctx context.Context, nodeID string, r nodeproto.Report) (nodeproto.ReportReply, error) {
	var reply nodeproto.ReportReply
	var changedNode bool
	var changed, others []string
	err := s.update(ctx, func(tx store.Tx) error {
		changedNode, changed, others = false, nil, nil
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
			res, err := s.applyObservation(tx, nodeID, o)
			if err != nil {
				return err
			}
			changedNode = changedNode || res.power
			if res.changed {
				changed = append(changed, o.ID)
			}
			others = append(others, res.notify...)
		}
		return nil
	})
	if err != nil {
		return reply, err
	}
	if changedNode {
		others = append(others, nodeID)
	}
	s.notify.NodesChanged(dedupe(others)...)
	s.watch.fire(changed...)
	return reply, nil
}

// observed is what applying one observation changed.
type observed struct {
	changed bool     // the instance changed
	power   bool     // the node's desired state changed
	notify  []string // other nodes to wake (peers of a released address)
}

// applyObservation moves one instance along its lifecycle.
func (s *Service) applyObservation(tx store.Tx, nodeID string, o nodeproto.ObservedInstance) (res observed, err error) {
	i, err := tx.GetInstance(o.ID)
	if errors.Is(err, model.ErrNotFound) {
		return res, nil // purged: the next full sync removes it
	}
	if err != nil {
		return res, err
	}
	if handled, res, err := s.moveObservation(tx, nodeID, &i, o); handled || err != nil {
		return res, err
	}
	if len(o.Console) > 0 {
		out := o.Console
		if len(out) > ConsoleMax {
			out = out[len(out)-ConsoleMax:]
		}
		if err := tx.PutConsole(model.Console{InstanceID: i.ID, Output: out, Updated: s.nowMS()}); err != nil {
			return res, err
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
		if res.notify, err = terminated(tx, &i, now, i.StateReason); err != nil {
			return res, err
		}
	}
	if i.State == prev && i.Power == prevPower {
		return res, nil
	}
	if dst := callOffUnlessRunning(&i); dst != "" {
		res.notify = append(res.notify, dst)
	}
	res.changed = true
	res.power = i.Power != prevPower
	if res.power && i.State != model.StateTerminated {
		if i.Rev, err = tx.NextRev(); err != nil {
			return res, err
		}
	}
	s.log.Info("instance state", "instance", i.ID, "node", nodeID, "from", prev, "to", i.State, "reason", i.StateReason.Code)
	return res, tx.UpdateInstance(i)
}

// terminated ends an instance whose VM is gone: it releases its private
// and elastic addresses and its groups, and returns the nodes whose peers
// must learn that the address is gone.
func terminated(tx store.Tx, i *model.Instance, now time.Time, reason model.StateReason) ([]string, error) {
	setState(i, model.StateTerminated, now, reason)
	i.Power = model.PowerAbsent
	i.PrivateIP = ""
	if err := disassociateInstance(tx, i.ID); err != nil {
		return nil, err
	}
	var err error
	if i.Rev, err = tx.NextRev(); err != nil {
		return nil, err
	}
	if err := tx.SetInstanceGroups(i.ID, nil); err != nil {
		return nil, err
	}
	return tx.VPCNodes([]string{i.VPCID})
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
	var wake []string
	err := s.update(ctx, func(tx store.Tx) error {
		down, wake = nil, nil
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
				w, err := s.abortMovesOf(tx, n.ID)
				if err != nil {
					return err
				}
				wake = append(wake, w...)
			}
		}
		return nil
	})
	for _, n := range down {
		s.log.Warn("node down: no report", "node", n.ID, "name", n.Name, "last_seen", n.LastSeen)
	}
	if len(wake) > 0 {
		s.notify.NodesChanged(dedupe(wake)...)
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
