package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/scheduler"
	"github.com/clipper-cloud/clipper/internal/store"
)

// MaxUserData is the largest user data EC2 accepts (16 KiB, decoded).
const MaxUserData = 16 * 1024

// RunInput is a RunInstances request.
type RunInput struct {
	ImageID      string
	InstanceType string
	KeyName      string
	UserData     []byte
	MinCount     int
	MaxCount     int
	ClientToken  string
	Zone         string
	Tags         []model.Tag
	SubnetID     string
	GroupIDs     []string
	GroupNames   []string
	PrivateIP    string
	Metadata     MetadataInput
	// DisableAPITermination and DisableAPIStop protect the instance.
	DisableAPITermination bool
	DisableAPIStop        bool
}

// MetadataInput are optional metadata settings; zero fields keep defaults.
type MetadataInput struct {
	HTTPTokens   string
	HTTPEndpoint string
	HopLimit     int
	Tags         string
}

// apply validates in and applies it over o.
func (in MetadataInput) apply(o model.MetadataOptions) (model.MetadataOptions, error) {
	switch in.HTTPTokens {
	case "":
	case "required", "optional":
		o.HTTPTokens = in.HTTPTokens
	default:
		return o, model.InvalidParam("HttpTokens", "HttpTokens must be required or optional, not '%s'", in.HTTPTokens)
	}
	switch in.HTTPEndpoint {
	case "":
	case "enabled", "disabled":
		o.HTTPEndpoint = in.HTTPEndpoint
	default:
		return o, model.InvalidParam("HttpEndpoint", "HttpEndpoint must be enabled or disabled, not '%s'", in.HTTPEndpoint)
	}
	switch in.Tags {
	case "":
	case "enabled", "disabled":
		o.Tags = in.Tags
	default:
		return o, model.InvalidParam("InstanceMetadataTags", "InstanceMetadataTags must be enabled or disabled, not '%s'", in.Tags)
	}
	if in.HopLimit != 0 {
		if in.HopLimit < 1 || in.HopLimit > 64 {
			return o, model.InvalidParam("HttpPutResponseHopLimit", "HttpPutResponseHopLimit must be between 1 and 64")
		}
		o.HopLimit = in.HopLimit
	}
	return o, nil
}

// Reservation is a reservation with its instances.
type Reservation struct {
	model.Reservation
	Instances []model.Instance
	// GroupNames maps the IDs of the instances' security groups to their
	// names (set by RunInstances, which reads them in its transaction, so
	// that its answer needs no second read).
	GroupNames map[string]string
}

// StateChange is the answer of Stop/Start/Terminate for one instance.
type StateChange struct {
	InstanceID string
	Previous   model.InstanceState
	Current    model.InstanceState
}

func userNote(t time.Time, what string) string {
	return fmt.Sprintf("%s (%s GMT)", what, t.UTC().Format("2006-01-02 15:04:05"))
}

func (s *Service) validateRun(in *RunInput) error {
	if in.ImageID == "" {
		return model.MissingParam("ImageId")
	}
	if !model.ValidID(model.PrefixImage, in.ImageID) {
		return model.Malformed(model.ResImage, in.ImageID)
	}
	if in.InstanceType == "" {
		in.InstanceType = s.cfg.DefaultType
	}
	if _, ok := s.types[in.InstanceType]; !ok {
		return model.InvalidParam("InstanceType", "The instance type '%s' does not exist", in.InstanceType)
	}
	if in.MinCount == 0 && in.MaxCount == 0 {
		in.MinCount, in.MaxCount = 1, 1
	}
	if in.MinCount < 1 {
		return model.InvalidParam("MinCount", "Value (%d) for parameter minCount is invalid. Expected a positive integer.", in.MinCount)
	}
	if in.MaxCount < in.MinCount {
		return model.InvalidParam("MaxCount", "Value (%d) for parameter maxCount is invalid. Expected a value of at least minCount (%d).", in.MaxCount, in.MinCount)
	}
	if in.MaxCount > 1000 {
		return model.InvalidParam("MaxCount", "Value (%d) for parameter maxCount is invalid. At most 1000 instances can be launched at once.", in.MaxCount)
	}
	if len(in.UserData) > MaxUserData {
		return model.InvalidParam("UserData", "User data is limited to %d bytes", MaxUserData)
	}
	if len(in.ClientToken) > 64 {
		return model.InvalidParam("ClientToken", "The client token must be at most 64 characters")
	}
	if in.Zone == "" && in.SubnetID == "" {
		in.Zone = s.cfg.Zones[0]
	}
	if in.PrivateIP != "" {
		if a, err := netip.ParseAddr(in.PrivateIP); err != nil || !a.Is4() {
			return model.InvalidParam("PrivateIpAddress", "Invalid private IP address '%s'", in.PrivateIP)
		}
		if in.MaxCount > 1 {
			return model.Errorf(model.KindParameterCombination, "", "PrivateIpAddress", "A private IP address can be given for one instance only")
		}
	}
	if _, err := in.Metadata.apply(model.DefaultMetadataOptions()); err != nil {
		return err
	}
	return validateTags(in.Tags)
}

// RunInstances launches instances: one transaction places them, assigns
// addresses and records them as pending; nodes are told afterwards.
func (s *Service) RunInstances(ctx context.Context, c Caller, in RunInput) (Reservation, error) {
	if err := s.validateRun(&in); err != nil {
		return Reservation{}, err
	}
	var res Reservation
	var nodes []string
	err := s.update(ctx, func(tx store.Tx) error {
		res, nodes = Reservation{}, nil
		if in.ClientToken != "" {
			r, err := tx.GetReservationByToken(c.AccountID, in.ClientToken)
			if err == nil {
				return s.replayRun(tx, c, r, in, &res)
			}
			if !errors.Is(err, model.ErrNotFound) {
				return err
			}
		}
		img, err := tx.GetImage(in.ImageID)
		if err != nil || img.State != "available" || (img.OwnerID != c.AccountID && !img.Public) {
			return model.NotFound(model.ResImage, in.ImageID)
		}
		if in.KeyName != "" {
			if _, err := tx.GetKeyPair(c.AccountID, in.KeyName); err != nil {
				return err
			}
		}
		typ := s.types[in.InstanceType]
		diskGiB := rootDiskGiB(img.Manifest, typ)
		sn, err := s.subnetFor(tx, c.AccountID, in.Zone, in.SubnetID)
		if err != nil {
			return err
		}
		in.Zone = sn.Zone
		groups, names, err := s.resolveInstanceGroups(tx, c, sn.VPCID, in.GroupIDs, in.GroupNames)
		if err != nil {
			return err
		}
		res.GroupNames = names
		md, _ := in.Metadata.apply(model.DefaultMetadataOptions())
		placed, err := s.place(tx, in, typ, diskGiB)
		if err != nil {
			return err
		}
		var want netip.Addr
		if in.PrivateIP != "" {
			want = netip.MustParseAddr(in.PrivateIP)
		}
		taken := map[netip.Addr]bool{}
		now := s.nowMS()
		res.Reservation = model.Reservation{ID: model.NewID(model.PrefixReservation), AccountID: c.AccountID,
			ClientToken: in.ClientToken, Created: now}
		if err := tx.InsertReservation(res.Reservation); err != nil {
			return err
		}
		firstRev, err := tx.NextRevs(len(placed))
		if err != nil {
			return err
		}
		for idx, nodeID := range placed {
			ip, mac, err := allocateAddress(tx, sn, taken, want)
			if err != nil {
				return err
			}
			rev := firstRev + int64(idx)
			inst := model.Instance{
				ID: model.NewID(model.PrefixInstance), AccountID: c.AccountID, ReservationID: res.ID,
				ImageID: img.ID, InstanceType: typ.Name, VCPUs: typ.VCPUs, MemoryMiB: typ.MemoryMiB,
				DiskGiB: diskGiB, KeyName: in.KeyName, UserData: in.UserData, LaunchIndex: idx,
				ClientToken: in.ClientToken, Zone: in.Zone, NodeID: nodeID, State: model.StatePending,
				LaunchTime: now, StateChanged: now, Power: model.PowerRunning, Rev: rev,
				VPCID: sn.VPCID, SubnetID: sn.ID, PrivateIP: ip.String(), MAC: mac, Groups: groups,
				Metadata: md, DisableAPITermination: in.DisableAPITermination, DisableAPIStop: in.DisableAPIStop,
			}
			res.Instances = append(res.Instances, inst)
			nodes = append(nodes, nodeID)
		}
		if err := tx.InsertInstances(res.Instances); err != nil {
			return err
		}
		if len(in.Tags) > 0 {
			for k := range res.Instances {
				if err := tx.SetTags(c.AccountID, res.Instances[k].ID, in.Tags); err != nil {
					return err
				}
				res.Instances[k].Tags = append([]model.Tag(nil), in.Tags...)
			}
		}
		// Every node of the network learns the new peers.
		peers, err := tx.VPCNodes([]string{sn.VPCID})
		nodes = append(nodes, peers...)
		return err
	})
	if err != nil {
		return Reservation{}, err
	}
	s.notify.NodesChanged(dedupe(nodes)...)
	return res, nil
}

// rootDiskGiB is the root disk an instance gets: an image with a disk is
// grown to the instance type's disk size when it is smaller; a kernel-only
// image has no disk.
func rootDiskGiB(m model.ImageManifest, typ model.InstanceType) int {
	if m.Disk.IsZero() {
		return 0
	}
	return max(int((m.DiskSize+1<<30-1)>>30), typ.DiskGiB)
}

// sameLaunch tells whether a retried RunInstances asks for what the first
// call launched (EC2 answers IdempotentParameterMismatch otherwise). Only
// what the caller chose is compared: an empty zone, subnet or group list
// took defaults the first time too.
func sameLaunch(first model.Instance, in RunInput, n int) bool {
	if first.ImageID != in.ImageID || first.InstanceType != in.InstanceType || n < in.MinCount || n > in.MaxCount ||
		first.KeyName != in.KeyName || !bytes.Equal(first.UserData, in.UserData) {
		return false
	}
	if (in.Zone != "" && first.Zone != in.Zone) || (in.SubnetID != "" && first.SubnetID != in.SubnetID) {
		return false
	}
	return len(in.GroupIDs) == 0 || slices.Equal(sortedCopy(first.Groups), sortedCopy(in.GroupIDs))
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// replayRun answers a retried RunInstances with the original reservation.
func (s *Service) replayRun(tx store.Tx, c Caller, r model.Reservation, in RunInput, res *Reservation) error {
	insts, err := tx.ListInstances(store.InstanceQuery{ReservationID: r.ID})
	if err != nil {
		return err
	}
	if len(insts) > 0 && !sameLaunch(insts[0], in, len(insts)) {
		return model.Errorf(model.KindParameterCombination, "idempotency", in.ClientToken,
			"Arguments on this idempotent request are inconsistent with arguments used in previous request(s).")
	}
	if err := s.decorate(tx, c.AccountID, insts); err != nil {
		return err
	}
	sort.Slice(insts, func(a, b int) bool { return insts[a].LaunchIndex < insts[b].LaunchIndex })
	names, err := groupNames(tx, c.AccountID)
	if err != nil {
		return err
	}
	res.Reservation, res.Instances, res.GroupNames = r, insts, names
	return nil
}

// place asks the scheduler for nodes for the request.
func (s *Service) place(tx store.Tx, in RunInput, typ model.InstanceType, diskGiB int) ([]string, error) {
	nodes, cands, err := s.schedulerNodes(tx)
	if err != nil {
		return nil, err
	}
	now := s.now()
	for k, n := range nodes {
		cands[k].Ready = s.schedulable(n, now)
	}
	placed, err := scheduler.Place(cands, scheduler.Request{
		Zone: in.Zone, MinCount: in.MinCount, MaxCount: in.MaxCount,
		Size: scheduler.Resources{VCPUs: typ.VCPUs, MemoryMiB: typ.MemoryMiB, DiskMiB: int64(diskGiB) * 1024},
	}, s.ratios())
	var ce *scheduler.CapacityError
	if errors.As(err, &ce) {
		return nil, model.Errorf(model.KindInsufficientCapacity, model.ResInstance, in.InstanceType,
			"Insufficient capacity for %s in %s: %s", in.InstanceType, in.Zone, ce.Error())
	}
	return placed, err
}

// schedulerNodes lists the nodes and, in the same order, the scheduler's
// view of them (capacity and usage; not ready: the caller says which are).
func (s *Service) schedulerNodes(tx store.Tx) ([]model.Node, []*scheduler.Node, error) {
	nodes, err := tx.ListNodes()
	if err != nil {
		return nil, nil, err
	}
	usage, err := tx.NodeUsage()
	if err != nil {
		return nil, nil, err
	}
	cands := make([]*scheduler.Node, len(nodes))
	for k, n := range nodes {
		u := usage[n.ID]
		cands[k] = &scheduler.Node{ID: n.ID, Zone: n.Zone,
			Capacity: scheduler.Resources{VCPUs: n.Capacity.VCPUs, MemoryMiB: n.Capacity.MemoryMiB, DiskMiB: n.Capacity.DiskMiB},
			Used:     scheduler.Resources{VCPUs: u.VCPUs, MemoryMiB: u.MemoryMiB, DiskMiB: u.DiskMiB}}
	}
	return nodes, cands, nil
}

// schedulable reports whether new instances may go to n at now: the
// operator allows it and it reports.
func (s *Service) schedulable(n model.Node, now time.Time) bool {
	return n.Schedulable() && now.Sub(n.LastSeen) < s.cfg.NodeDownAfter
}

// ratios are the overcommit ratios as the scheduler takes them.
func (s *Service) ratios() scheduler.Ratios {
	oc := s.cfg.Overcommit
	return scheduler.Ratios{CPU: oc.CPU, Memory: oc.Memory, Disk: oc.Disk}
}

// decorate loads the tags and security groups of instances into them.
// An empty accountID means the instances may belong to several accounts.
func (s *Service) decorate(tx store.Tx, accountID string, insts []model.Instance) error {
	if len(insts) == 0 {
		return nil
	}
	ids := make([]string, len(insts))
	for i := range insts {
		ids[i] = insts[i].ID
	}
	groups, err := tx.InstanceGroups(ids)
	if err != nil {
		return err
	}
	tags := map[string][]model.Tag{}
	if accountID != "" && len(ids) > 200 {
		tags, err = tx.Tags(accountID, nil)
	} else {
		byAccount := map[string][]string{}
		for _, i := range insts {
			byAccount[i.AccountID] = append(byAccount[i.AccountID], i.ID)
		}
		for acct, some := range byAccount {
			t, err := tx.Tags(acct, some)
			if err != nil {
				return err
			}
			for k, v := range t {
				tags[k] = v
			}
		}
	}
	if err != nil {
		return err
	}
	addrs, err := tx.InstanceAddresses(ids)
	if err != nil {
		return err
	}
	for i := range insts {
		insts[i].Tags = tags[insts[i].ID]
		insts[i].Groups = groups[insts[i].ID]
		insts[i].PublicIP = addrs[insts[i].ID].PublicIP
	}
	return nil
}

func instanceFields(i *model.Instance) fieldFunc {
	return func(name string) ([]string, bool) {
		switch name {
		case "instance-id":
			return []string{i.ID}, true
		case "instance-state-name":
			return []string{string(i.State)}, true
		case "ip-address", "network-interface.addresses.association.public-ip":
			return []string{i.PublicIP}, true
		case "instance-state-code":
			return []string{strconv.Itoa(i.State.Code())}, true
		case "image-id":
			return []string{i.ImageID}, true
		case "instance-type":
			return []string{i.InstanceType}, true
		case "key-name":
			return []string{i.KeyName}, true
		case "availability-zone":
			return []string{i.Zone}, true
		case "reservation-id":
			return []string{i.ReservationID}, true
		case "owner-id":
			return []string{i.AccountID}, true
		case "private-ip-address", "network-interface.addresses.private-ip-address":
			return []string{i.PrivateIP}, true
		case "private-dns-name":
			return []string{PrivateDNSName(i.PrivateIP)}, true
		case "mac-address", "network-interface.mac-address":
			return []string{i.MAC}, true
		case "vpc-id":
			return []string{i.VPCID}, true
		case "subnet-id":
			return []string{i.SubnetID}, true
		case "launch-index", "ami-launch-index":
			return []string{strconv.Itoa(i.LaunchIndex)}, true
		case "client-token":
			return []string{i.ClientToken}, true
		case "architecture":
			return []string{"x86_64"}, true
		case "hypervisor":
			return []string{"kvm"}, true
		case "root-device-type":
			return []string{"ebs"}, true
		case "virtualization-type":
			return []string{"hvm"}, true
		case "tenancy", "placement-tenancy":
			return []string{"default"}, true
		case "state-reason-code":
			return []string{i.StateReason.Code}, true
		case "launch-time":
			return []string{i.LaunchTime.Format(time.RFC3339)}, true
		case "instance.group-id", "group-id":
			return i.Groups, true
		case "metadata-options.http-tokens":
			return []string{i.Metadata.HTTPTokens}, true
		case "metadata-options.http-endpoint":
			return []string{i.Metadata.HTTPEndpoint}, true
		}
		return tagField(i.Tags, name)
	}
}

// PrivateDNSName is the EC2-style host name for a private address.
func PrivateDNSName(ip string) string { return nodeproto.PrivateDNSName(ip) }

// checkInstanceIDs validates the shape of instance IDs.
func checkInstanceIDs(ids []string) error {
	for _, id := range ids {
		if !model.ValidID(model.PrefixInstance, id) {
			return model.Malformed(model.ResInstance, id)
		}
	}
	return nil
}

// loadOwned loads the named instances of the caller, or a NotFound error
// naming every missing ID.
func loadOwned(tx store.Tx, c Caller, ids []string) ([]model.Instance, error) {
	insts, err := tx.ListInstances(store.InstanceQuery{AccountID: c.AccountID, IDs: ids})
	if err != nil {
		return nil, err
	}
	if len(insts) != len(dedupe(ids)) {
		have := map[string]bool{}
		for _, i := range insts {
			have[i.ID] = true
		}
		var missing []string
		for _, id := range dedupe(ids) {
			if !have[id] {
				missing = append(missing, id)
			}
		}
		if len(missing) == 1 {
			return nil, model.NotFound(model.ResInstance, missing[0])
		}
		return nil, &model.Error{Kind: model.KindNotFound, Resource: model.ResInstance, ID: missing[0],
			Msg: fmt.Sprintf("The instance IDs '%s' do not exist", strings.Join(missing, ", "))}
	}
	return insts, nil
}

// DescribeInstances lists instances grouped by reservation.
func (s *Service) DescribeInstances(ctx context.Context, c Caller, ids []string, filters []Filter, pg Page) ([]Reservation, string, error) {
	if err := checkInstanceIDs(ids); err != nil {
		return nil, "", err
	}
	if err := checkMaxResults(pg, 5, 1000, len(ids) > 0); err != nil {
		return nil, "", err
	}
	if err := checkFilters(filters, instanceFields(&model.Instance{})); err != nil {
		return nil, "", err
	}
	var insts []model.Instance
	err := s.view(ctx, func(tx store.Tx) error {
		var err error
		if len(ids) > 0 {
			insts, err = loadOwned(tx, c, ids)
		} else {
			insts, err = tx.ListInstances(store.InstanceQuery{AccountID: c.AccountID})
		}
		if err != nil {
			return err
		}
		return s.decorate(tx, c.AccountID, insts)
	})
	if err != nil {
		return nil, "", err
	}
	kept := insts[:0]
	for i := range insts {
		if matchFilters(filters, instanceFields(&insts[i])) {
			kept = append(kept, insts[i])
		}
	}
	sort.Slice(kept, func(a, b int) bool { return kept[a].ID < kept[b].ID })
	idList := make([]string, len(kept))
	for i := range kept {
		idList[i] = kept[i].ID
	}
	start, end, next, err := pageIDs(idList, pg)
	if err != nil {
		return nil, "", err
	}
	return groupReservations(kept[start:end]), next, nil
}

func groupReservations(insts []model.Instance) []Reservation {
	var out []Reservation
	idx := map[string]int{}
	for _, i := range insts {
		k, ok := idx[i.ReservationID]
		if !ok {
			k = len(out)
			idx[i.ReservationID] = k
			out = append(out, Reservation{Reservation: model.Reservation{
				ID: i.ReservationID, AccountID: i.AccountID, ClientToken: i.ClientToken, Created: i.LaunchTime}})
		}
		out[k].Instances = append(out[k].Instances, i)
	}
	return out
}

// stateOp changes one instance for Stop/Start/Terminate/Reboot; it returns
// whether the instance changed in a way its node must see.
type stateOp func(i *model.Instance, now time.Time) (nodeChange bool, err error)

func (s *Service) changeInstances(ctx context.Context, c Caller, ids []string, op stateOp) ([]StateChange, error) {
	if len(ids) == 0 {
		return nil, model.MissingParam("InstanceId")
	}
	if err := checkInstanceIDs(ids); err != nil {
		return nil, err
	}
	var out []StateChange
	var nodes []string
	err := s.update(ctx, func(tx store.Tx) error {
		out, nodes = nil, nil
		insts, err := loadOwned(tx, c, ids)
		if err != nil {
			return err
		}
		now := s.nowMS()
		for k := range insts {
			i := &insts[k]
			prev := i.State
			changed, err := op(i, now)
			if err != nil {
				return err
			}
			if dst := callOffUnlessRunning(i); dst != "" {
				nodes = append(nodes, dst)
				changed = true
			}
			if changed {
				if i.Rev, err = tx.NextRev(); err != nil {
					return err
				}
				if i.NodeID != "" {
					nodes = append(nodes, i.NodeID)
				}
			}
			if changed || i.State != prev {
				if err := tx.UpdateInstance(*i); err != nil {
					return err
				}
			}
			out = append(out, StateChange{InstanceID: i.ID, Previous: prev, Current: i.State})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.notify.NodesChanged(dedupe(nodes)...)
	for _, ch := range out {
		s.watch.fire(ch.InstanceID)
	}
	return out, nil
}

func setState(i *model.Instance, st model.InstanceState, now time.Time, reason model.StateReason) {
	i.State, i.StateChanged, i.StateReason = st, now, reason
}

func incorrectState(i *model.Instance, verb string) error {
	return model.Errorf(model.KindIncorrectState, model.ResInstance, i.ID,
		"The instance '%s' is not in a state from which it can be %s.", i.ID, verb)
}

// StopInstances stops running instances (their disks stay).
func (s *Service) StopInstances(ctx context.Context, c Caller, ids []string, force bool) ([]StateChange, error) {
	return s.changeInstances(ctx, c, ids, func(i *model.Instance, now time.Time) (bool, error) {
		if i.DisableAPIStop && i.State != model.StateStopped && i.State != model.StateStopping {
			return false, model.Errorf(model.KindUnsupported, "protected", i.ID,
				"The instance '%s' may not be stopped. Modify its 'disableApiStop' instance attribute and try again.", i.ID)
		}
		switch i.State {
		case model.StatePending, model.StateRunning:
			setState(i, model.StateStopping, now, model.StateReason{Code: "Client.UserInitiatedShutdown",
				Message: "Client.UserInitiatedShutdown: User initiated shutdown"})
			i.TransitionNote = userNote(now, "User initiated")
			i.Power = model.PowerStopped
			return true, nil
		case model.StateStopping, model.StateStopped:
			return false, nil
		}
		return false, incorrectState(i, "stopped")
	})
}

// StartInstances starts stopped instances on their node.
func (s *Service) StartInstances(ctx context.Context, c Caller, ids []string) ([]StateChange, error) {
	return s.changeInstances(ctx, c, ids, func(i *model.Instance, now time.Time) (bool, error) {
		switch i.State {
		case model.StateStopped:
			setState(i, model.StatePending, now, model.StateReason{})
			i.TransitionNote = ""
			i.Power = model.PowerRunning
			return true, nil
		case model.StatePending, model.StateRunning:
			return false, nil
		}
		return false, incorrectState(i, "started")
	})
}

// TerminateInstances ends instances; their disks are deleted.
func (s *Service) TerminateInstances(ctx context.Context, c Caller, ids []string) ([]StateChange, error) {
	return s.changeInstances(ctx, c, ids, func(i *model.Instance, now time.Time) (bool, error) {
		switch i.State {
		case model.StateTerminated, model.StateShuttingDown:
			return false, nil
		}
		if i.DisableAPITermination {
			return false, model.Errorf(model.KindUnsupported, "protected", i.ID,
				"The instance '%s' may not be terminated. Modify its 'disableApiTermination' instance attribute and try again.", i.ID)
		}
		i.TransitionNote = userNote(now, "User initiated")
		i.Power = model.PowerAbsent
		reason := model.StateReason{Code: "Client.UserInitiatedShutdown", Message: "Client.UserInitiatedShutdown: User initiated shutdown"}
		if i.NodeID == "" {
			setState(i, model.StateTerminated, now, reason)
			i.PrivateIP = ""
			return true, nil
		}
		setState(i, model.StateShuttingDown, now, reason)
		return true, nil
	})
}

// RebootInstances asks the nodes to reset running instances.
func (s *Service) RebootInstances(ctx context.Context, c Caller, ids []string) error {
	_, err := s.changeInstances(ctx, c, ids, func(i *model.Instance, now time.Time) (bool, error) {
		switch i.State {
		case model.StateRunning, model.StatePending:
			i.RebootSeq++
			return true, nil
		}
		return false, incorrectState(i, "rebooted")
	})
	return err
}

// ConsoleOutput returns the latest console output of an instance.
func (s *Service) ConsoleOutput(ctx context.Context, c Caller, id string) (model.Console, error) {
	if err := checkInstanceIDs([]string{id}); err != nil {
		return model.Console{}, err
	}
	var con model.Console
	err := s.view(ctx, func(tx store.Tx) error {
		if _, err := loadOwned(tx, c, []string{id}); err != nil {
			return err
		}
		var err error
		con, err = tx.GetConsole(id)
		if errors.Is(err, model.ErrNotFound) {
			con, err = model.Console{InstanceID: id, Updated: s.nowMS()}, nil
		}
		return err
	})
	return con, err
}

// InstanceStatus is one entry of DescribeInstanceStatus.
//
// EC2 says why an instance is impaired through its status checks, not in
// free text: a node that stopped reporting fails the system reachability
// check (SystemStatus impaired, its reachability detail failed) since
// ImpairedSince, the node's last report; the instance check cannot run
// (insufficient-data). EC2's events (instance-reboot, system-reboot,
// system-maintenance, instance-retirement, instance-stop) are all
// scheduled actions: none says "the host is unreachable", so none is
// made up for it.
type InstanceStatus struct {
	Instance       model.Instance
	SystemStatus   string // ok | impaired | initializing | not-applicable
	InstanceStatus string
	// ImpairedSince is when the failing check started failing (zero when
	// nothing fails).
	ImpairedSince time.Time
}

// Reachability is the status of a check's reachability detail, as EC2
// names it (passed, failed, initializing, insufficient-data,
// not-applicable).
func Reachability(summary string) string {
	return map[string]string{"ok": "passed", "impaired": "failed", "initializing": "initializing",
		"insufficient-data": "insufficient-data", "not-applicable": "not-applicable"}[summary]
}

// DescribeInstanceStatus reports health; by default only running instances.
func (s *Service) DescribeInstanceStatus(ctx context.Context, c Caller, ids []string, filters []Filter, includeAll bool, pg Page) ([]InstanceStatus, string, error) {
	statusFilters := filters[:0:0]
	var instFilters []Filter
	for _, f := range filters {
		switch f.Name {
		case "system-status.status", "instance-status.status", "system-status.reachability", "instance-status.reachability":
			statusFilters = append(statusFilters, f)
		default:
			instFilters = append(instFilters, f)
		}
	}
	if !includeAll {
		instFilters = append(instFilters, Filter{Name: "instance-state-name", Values: []string{"running"}})
	}
	res, next, err := s.DescribeInstances(ctx, c, ids, instFilters, pg)
	if err != nil {
		return nil, "", err
	}
	nodes := map[string]model.Node{}
	err = s.view(ctx, func(tx store.Tx) error {
		ns, err := tx.ListNodes()
		for _, n := range ns {
			nodes[n.ID] = n
		}
		return err
	})
	if err != nil {
		return nil, "", err
	}
	var out []InstanceStatus
	for _, r := range res {
		for _, i := range r.Instances {
			st := s.instanceHealth(i, nodes)
			if matchFilters(statusFilters, func(name string) ([]string, bool) {
				switch name {
				case "system-status.status":
					return []string{st.SystemStatus}, true
				case "system-status.reachability":
					return []string{Reachability(st.SystemStatus)}, true
				case "instance-status.reachability":
					return []string{Reachability(st.InstanceStatus)}, true
				}
				return []string{st.InstanceStatus}, true
			}) {
				out = append(out, st)
			}
		}
	}
	return out, next, nil
}

func (s *Service) instanceHealth(i model.Instance, nodes map[string]model.Node) InstanceStatus {
	st := InstanceStatus{Instance: i, SystemStatus: "not-applicable", InstanceStatus: "not-applicable"}
	if i.State != model.StateRunning {
		return st
	}
	st.SystemStatus, st.InstanceStatus = "ok", "ok"
	n, ok := nodes[i.NodeID]
	if !ok || n.State == model.NodeDown || s.now().Sub(n.LastSeen) > s.cfg.NodeDownAfter {
		// The node is not reporting: it was last heard from at LastSeen
		// (an instance whose node is unknown, since it started).
		st.SystemStatus, st.InstanceStatus = "impaired", "insufficient-data"
		st.ImpairedSince = n.LastSeen
		if !ok {
			st.ImpairedSince = i.StateChanged
		}
	}
	return st
}

// Purge removes terminated instances older than the configured TTL.
func (s *Service) Purge(ctx context.Context) (int, error) {
	var n int
	err := s.update(ctx, func(tx store.Tx) error {
		var err error
		n, err = tx.PurgeInstances(s.now().Add(-s.cfg.TerminatedTTL))
		return err
	})
	return n, err
}

func dedupe(ss []string) []string {
	seen := make(map[string]bool, len(ss))
	out := ss[:0:0]
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
