package network

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

// SetGroups implements agent.Network: it (re)writes the chains and member
// sets of the given groups in one transaction, so a rule change takes
// effect as soon as the call returns, for new connections (established
// ones are not cut, as in EC2). Deleted groups, and with full every group
// not listed, lose all their permissions at once; their chains and sets
// go as soon as no instance or rule refers to them. Invalid rules are
// left out (and logged): a bad rule can only take permissions away.
func (h *Host) SetGroups(ctx context.Context, groups []nodeproto.SecurityGroup, full bool) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	b, err := newBatch()
	if err != nil {
		return err
	}
	listed := map[string]bool{}
	next := map[string]groupState{}
	changed := 0
	for _, g := range groups {
		if g.ID == "" {
			continue
		}
		listed[g.ID] = true
		if g.Deleted {
			emptyGroup(b, g.ID)
			changed++
			continue
		}
		fp := fingerprint(g)
		if st, ok := h.groups[g.ID]; ok && st.fingerprint == fp {
			next[g.ID] = st
			continue
		}
		in, errs := compileRules(g.Ingress)
		eg, errs2 := compileRules(g.Egress)
		for _, e := range append(errs, errs2...) {
			h.log.Warn("security group rule left out", "group", g.ID, "error", e)
		}
		writeGroup(b, g.ID, in, eg, memberElems(g.Members))
		next[g.ID] = groupState{fingerprint: fp, peers: peerGroups(in, eg)}
		changed++
	}
	for id, st := range h.groups {
		if listed[id] {
			continue
		}
		if full {
			emptyGroup(b, id)
			changed++
			continue
		}
		next[id] = st
	}
	if changed > 0 {
		if err := b.commit("security groups"); err != nil {
			return err
		}
	}
	h.groups = next
	h.cleanupGroups()
	return nil
}

// fingerprint identifies a group's content: an unchanged group is not
// rewritten.
func fingerprint(g nodeproto.SecurityGroup) string {
	members := slices.Clone(g.Members)
	slices.Sort(members)
	b, _ := json.Marshal(struct {
		In, Eg  []nodeproto.Rule
		Members []string
	}{g.Ingress, g.Egress, members})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func memberElems(members []string) []nftables.SetElement {
	seen := map[netip.Addr]bool{}
	var out []nftables.SetElement
	for _, m := range members {
		a, err := netip.ParseAddr(strings.TrimSpace(m))
		if err != nil || !a.Unmap().Is4() || seen[a.Unmap()] {
			continue
		}
		a = a.Unmap()
		seen[a] = true
		out = append(out, nftables.SetElement{Key: a.AsSlice()})
	}
	return out
}

// cleanupGroups deletes group chains and member sets that nothing needs:
// groups that are not defined and that no instance chain or group rule
// refers to. It reads the kernel's list, so it also clears what an earlier
// agent left behind. Deletion is best effort: one transaction, and item by
// item when that fails (something unknown may still refer to an item).
func (h *Host) cleanupGroups() {
	keepChains := map[string]bool{}
	keepSets := map[string]bool{}
	keep := func(g string) {
		keepChains[groupChainName(g, dirIn)] = true
		keepChains[groupChainName(g, dirEg)] = true
		keepSets[memberSetName(g)] = true
	}
	for id, st := range h.groups {
		keep(id)
		for _, p := range st.peers {
			keepSets[memberSetName(p)] = true
		}
	}
	for _, p := range h.ports {
		for _, g := range p.groups {
			keep(g)
		}
	}
	c, err := nftables.New()
	if err != nil {
		return
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		h.log.Debug("list chains for cleanup", "error", err)
		return
	}
	sets, err := c.GetSets(filterTable)
	if err != nil {
		h.log.Debug("list sets for cleanup", "error", err)
		return
	}
	var steps []func(*batch)
	for _, ch := range chains {
		name := ch.Name
		if ch.Table.Name != FilterTable || !strings.HasPrefix(name, "g-") || keepChains[name] {
			continue
		}
		steps = append(steps, func(b *batch) {
			c := &nftables.Chain{Name: name, Table: filterTable}
			b.c.FlushChain(c)
			b.c.DelChain(c)
		})
	}
	// Sets after chains: a chain's rules may look a set up.
	for _, s := range sets {
		name := s.Name
		if !strings.HasPrefix(name, "m-") || keepSets[name] {
			continue
		}
		steps = append(steps, func(b *batch) { b.c.DelSet(&nftables.Set{Table: filterTable, Name: name}) })
	}
	if len(steps) == 0 {
		return
	}
	if b, err := newBatch(); err == nil {
		for _, s := range steps {
			s(b)
		}
		if b.commit("clean up groups") == nil {
			return
		}
	}
	for _, s := range steps {
		if b, err := newBatch(); err == nil {
			s(b)
			if err := b.commit("clean up a group"); err != nil {
				h.log.Debug("group cleanup step", "error", err)
			}
		}
	}
}
