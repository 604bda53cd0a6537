package service

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net/netip"
	"sort"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/store"
)

// poolAddresses counts the addresses of the public pools (network and
// broadcast addresses of each prefix left out when it is larger than /31).
func (s *Service) poolSize() uint64 {
	var n uint64
	for _, p := range s.cfg.PublicPools {
		size := uint64(1) << (32 - p.Bits())
		if p.Bits() < 31 {
			size -= 2
		}
		n += size
	}
	return n
}

// poolAddress returns the k-th usable address of the pools.
func (s *Service) poolAddress(k uint64) netip.Addr {
	for _, p := range s.cfg.PublicPools {
		size := uint64(1) << (32 - p.Bits())
		first := p.Masked().Addr()
		if p.Bits() < 31 {
			size -= 2
			first = first.Next()
		}
		if k < size {
			return ipv4Add(first, k)
		}
		k -= size
	}
	return netip.Addr{}
}

func (s *Service) inPool(a netip.Addr) bool {
	for _, p := range s.cfg.PublicPools {
		if p.Contains(a) && (p.Bits() >= 31 || (a != p.Masked().Addr() && a != ipv4Add(p.Masked().Addr(), (1<<(32-p.Bits()))-1))) {
			return true
		}
	}
	return false
}

// AllocateAddress takes a public address from the pool (a given one, or
// any free one) for the caller.
func (s *Service) AllocateAddress(ctx context.Context, c Caller, want string, tags []model.Tag) (model.Address, error) {
	if len(s.cfg.PublicPools) == 0 {
		return model.Address{}, model.Errorf(model.KindInsufficientCapacity, model.ResAddress, "",
			"This cloud has no public address pool: the operator sets one with --public-pool")
	}
	if err := validateTags(tags); err != nil {
		return model.Address{}, err
	}
	var wantAddr netip.Addr
	if want != "" {
		a, err := netip.ParseAddr(want)
		if err != nil || !s.inPool(a) {
			return model.Address{}, model.InvalidParam("Address", "The address %s is not in the public pool", want)
		}
		wantAddr = a
	}
	var out model.Address
	err := s.update(ctx, func(tx store.Tx) error {
		all, err := tx.ListAddresses("")
		if err != nil {
			return err
		}
		used := make(map[netip.Addr]bool, len(all))
		mine := 0
		for _, a := range all {
			if ip, err := netip.ParseAddr(a.PublicIP); err == nil {
				used[ip] = true
			}
			if a.AccountID == c.AccountID {
				mine++
			}
		}
		// Port forwards listen on pool addresses too.
		fws, err := tx.ListForwards("")
		if err != nil {
			return err
		}
		for _, f := range fws {
			if ip, err := netip.ParseAddr(f.ListenIP); err == nil {
				used[ip] = true
			}
		}
		if mine >= s.cfg.MaxAddresses {
			return model.Errorf(model.KindLimitExceeded, model.ResAddress, "", "The maximum number of addresses (%d) has been reached.", s.cfg.MaxAddresses)
		}
		ip := wantAddr
		if ip.IsValid() && used[ip] {
			return model.Errorf(model.KindInUse, model.ResAddress, want, "The address %s is already allocated or carries port forwards", want)
		}
		if !ip.IsValid() {
			ip, err = s.pickFree(used)
			if err != nil {
				return err
			}
		}
		out = model.Address{ID: model.NewID(model.PrefixAllocation), AccountID: c.AccountID, PublicIP: ip.String(),
			Created: s.nowMS(), Tags: tags}
		if err := tx.InsertAddress(out); err != nil {
			return err
		}
		return tx.SetTags(c.AccountID, out.ID, tags)
	})
	return out, err
}

// pickFree picks a free pool address: at random first, then by scanning.
func (s *Service) pickFree(used map[netip.Addr]bool) (netip.Addr, error) {
	n := s.poolSize()
	for attempt := 0; attempt < 32 && n > 0; attempt++ {
		var b [8]byte
		rand.Read(b[:])
		if a := s.poolAddress(binary.BigEndian.Uint64(b[:]) % n); !used[a] {
			return a, nil
		}
	}
	for k := uint64(0); k < n; k++ {
		if a := s.poolAddress(k); !used[a] {
			return a, nil
		}
	}
	return netip.Addr{}, model.Errorf(model.KindInsufficientCapacity, model.ResAddress, "",
		"There are no free addresses left in the public pool")
}

// AddressRef names an address by allocation ID or public IP.
type AddressRef struct {
	AllocationID string
	PublicIP     string
}

func (s *Service) resolveAddress(tx store.Tx, c Caller, ref AddressRef) (model.Address, error) {
	var a model.Address
	var err error
	switch {
	case ref.AllocationID != "":
		if !model.ValidID(model.PrefixAllocation, ref.AllocationID) {
			return a, model.Errorf(model.KindMalformed, model.ResAllocation, ref.AllocationID, "Invalid id: \"%s\"", ref.AllocationID)
		}
		a, err = tx.GetAddress(ref.AllocationID)
		if err != nil || a.AccountID != c.AccountID {
			return a, model.Errorf(model.KindNotFound, model.ResAllocation, ref.AllocationID,
				"The allocation ID '%s' does not exist", ref.AllocationID)
		}
	case ref.PublicIP != "":
		a, err = tx.GetAddressByIP(ref.PublicIP)
		if err != nil || a.AccountID != c.AccountID {
			return a, model.Errorf(model.KindNotFound, model.ResAddress, ref.PublicIP,
				"Address '%s' not found.", ref.PublicIP)
		}
	default:
		return a, model.MissingParam("AllocationId")
	}
	return a, nil
}

// AssociateAddress points an elastic IP at an instance (its primary or a
// given private address). Re-associating moves it.
func (s *Service) AssociateAddress(ctx context.Context, c Caller, ref AddressRef, instanceID, privateIP string, allowReassoc bool) (model.Address, error) {
	if instanceID == "" {
		return model.Address{}, model.MissingParam("InstanceId")
	}
	if err := checkInstanceIDs([]string{instanceID}); err != nil {
		return model.Address{}, err
	}
	var out model.Address
	var nodes []string
	err := s.update(ctx, func(tx store.Tx) error {
		nodes = nil
		a, err := s.resolveAddress(tx, c, ref)
		if err != nil {
			return err
		}
		insts, err := loadOwned(tx, c, []string{instanceID})
		if err != nil {
			return err
		}
		inst := insts[0]
		switch inst.State {
		case model.StateTerminated, model.StateShuttingDown:
			return incorrectState(&inst, "associated with an address")
		}
		if privateIP == "" {
			privateIP = inst.PrivateIP
		} else if privateIP != inst.PrivateIP {
			return model.InvalidParam("PrivateIpAddress", "%s is not an address of instance %s", privateIP, inst.ID)
		}
		if a.InstanceID == inst.ID && a.AssociationID != "" {
			out = a
			return nil
		}
		if a.AssociationID != "" && !allowReassoc && ref.AllocationID != "" {
			return model.Errorf(model.KindInUse, model.ResAssociation, a.ID,
				"The address %s is already associated with %s", a.PublicIP, a.InstanceID)
		}
		// The instance gives up any address it had; the address leaves its
		// previous instance.
		byInst, err := tx.InstanceAddresses([]string{inst.ID})
		if err != nil {
			return err
		}
		if old, ok := byInst[inst.ID]; ok && old.ID != a.ID {
			old.AssociationID, old.InstanceID, old.PrivateIP = "", "", ""
			if err := tx.UpdateAddress(old); err != nil {
				return err
			}
		}
		if a.InstanceID != "" {
			n, err := s.touchInstance(tx, a.InstanceID)
			if err != nil {
				return err
			}
			nodes = append(nodes, n)
		}
		a.AssociationID, a.InstanceID, a.PrivateIP = model.NewID(model.PrefixAssociation), inst.ID, privateIP
		if err := tx.UpdateAddress(a); err != nil {
			return err
		}
		n, err := s.touchInstance(tx, inst.ID)
		nodes = append(nodes, n)
		out = a
		return err
	})
	if err != nil {
		return model.Address{}, err
	}
	s.notify.NodesChanged(dedupe(nodes)...)
	return out, nil
}

// touchInstance bumps an instance's revision so its node sees a change
// (here: its public address), and returns the node.
func (s *Service) touchInstance(tx store.Tx, id string) (string, error) {
	i, err := tx.GetInstance(id)
	if errors.Is(err, model.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if i.Rev, err = tx.NextRev(); err != nil {
		return "", err
	}
	return i.NodeID, tx.UpdateInstance(i)
}

// DisassociateAddress detaches an elastic IP from its instance.
func (s *Service) DisassociateAddress(ctx context.Context, c Caller, associationID, publicIP string) error {
	var node string
	err := s.update(ctx, func(tx store.Tx) error {
		all, err := tx.ListAddresses(c.AccountID)
		if err != nil {
			return err
		}
		for _, a := range all {
			if (associationID != "" && a.AssociationID == associationID) || (associationID == "" && publicIP != "" && a.PublicIP == publicIP) {
				if a.AssociationID == "" {
					return nil
				}
				inst := a.InstanceID
				a.AssociationID, a.InstanceID, a.PrivateIP = "", "", ""
				if err := tx.UpdateAddress(a); err != nil {
					return err
				}
				node, err = s.touchInstance(tx, inst)
				return err
			}
		}
		if associationID != "" {
			return model.Errorf(model.KindNotFound, model.ResAssociation, associationID,
				"The association ID '%s' does not exist", associationID)
		}
		if publicIP == "" {
			return model.MissingParam("AssociationId")
		}
		return model.Errorf(model.KindNotFound, model.ResAddress, publicIP, "Address '%s' not found.", publicIP)
	})
	if err == nil && node != "" {
		s.notify.NodesChanged(node)
	}
	return err
}

// ReleaseAddress gives an unassociated elastic IP back to the pool.
func (s *Service) ReleaseAddress(ctx context.Context, c Caller, ref AddressRef) error {
	return s.update(ctx, func(tx store.Tx) error {
		a, err := s.resolveAddress(tx, c, ref)
		if err != nil {
			return err
		}
		if a.AssociationID != "" {
			return model.Errorf(model.KindInUse, model.ResAddress, a.PublicIP,
				"Address %s is associated with %s: disassociate it first", a.PublicIP, a.InstanceID)
		}
		return tx.DeleteAddress(a.ID)
	})
}

func addressFields(a *model.Address) fieldFunc {
	return func(name string) ([]string, bool) {
		switch name {
		case "allocation-id":
			return []string{a.ID}, true
		case "association-id":
			return []string{a.AssociationID}, true
		case "domain":
			return []string{"vpc"}, true
		case "instance-id":
			return []string{a.InstanceID}, true
		case "private-ip-address":
			return []string{a.PrivateIP}, true
		case "public-ip":
			return []string{a.PublicIP}, true
		case "network-interface-owner-id":
			return []string{a.AccountID}, true
		case "network-interface-id":
			if a.InstanceID == "" {
				return nil, true
			}
			return []string{derivedID(model.PrefixENI, a.InstanceID)}, true
		}
		return tagField(a.Tags, name)
	}
}

// DescribeAddresses lists the caller's elastic IPs.
func (s *Service) DescribeAddresses(ctx context.Context, c Caller, ips, allocIDs []string, filters []Filter) ([]model.Address, error) {
	if err := checkFilters(filters, addressFields(&model.Address{})); err != nil {
		return nil, err
	}
	var all []model.Address
	err := s.view(ctx, func(tx store.Tx) error {
		var err error
		if all, err = tx.ListAddresses(c.AccountID); err != nil {
			return err
		}
		tags, err := tx.Tags(c.AccountID, nil)
		for i := range all {
			all[i].Tags = tags[all[i].ID]
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	wantIP, wantID := map[string]bool{}, map[string]bool{}
	for _, ip := range ips {
		wantIP[ip] = true
	}
	for _, id := range allocIDs {
		wantID[id] = true
	}
	var out []model.Address
	for i := range all {
		a := &all[i]
		if (len(ips) > 0 || len(allocIDs) > 0) && !wantIP[a.PublicIP] && !wantID[a.ID] {
			continue
		}
		delete(wantIP, a.PublicIP)
		delete(wantID, a.ID)
		if matchFilters(filters, addressFields(a)) {
			out = append(out, *a)
		}
	}
	for id := range wantID {
		return nil, model.Errorf(model.KindNotFound, model.ResAllocation, id, "The allocation ID '%s' does not exist", id)
	}
	for ip := range wantIP {
		return nil, model.Errorf(model.KindNotFound, model.ResAddress, ip, "Address '%s' not found.", ip)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// disassociateInstance frees a terminated instance's elastic IP.
func disassociateInstance(tx store.Tx, instanceID string) error {
	byInst, err := tx.InstanceAddresses([]string{instanceID})
	if err != nil {
		return err
	}
	if a, ok := byInst[instanceID]; ok {
		a.AssociationID, a.InstanceID, a.PrivateIP = "", "", ""
		return tx.UpdateAddress(a)
	}
	return nil
}
