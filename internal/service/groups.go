package service

import (
	"context"

	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/store"
)

// PeerCIDR is a CIDR peer of a permission.
type PeerCIDR struct {
	CIDR        string
	Description string
}

// PeerGroup is a security group peer of a permission (by ID or by name in
// the default VPC).
type PeerGroup struct {
	GroupID     string
	GroupName   string
	UserID      string
	Description string
}

// Permission is one IpPermissions entry of Authorize/Revoke.
type Permission struct {
	Protocol string
	FromPort *int
	ToPort   *int
	CIDRs    []PeerCIDR
	Groups   []PeerGroup
}

// GroupRef names a group by ID, or by name in the default VPC.
type GroupRef struct {
	ID   string
	Name string
}

var groupNameRE = regexp.MustCompile(`^[\x20-\x7e]{1,255}$`)

// NormalizeProtocol maps EC2's protocol spellings to one form: "tcp",
// "udp", "icmp", "icmpv6", "-1" (all), or a decimal protocol number.
func NormalizeProtocol(p string) (string, error) {
	switch strings.ToLower(p) {
	case "tcp", "6":
		return "tcp", nil
	case "udp", "17":
		return "udp", nil
	case "icmp", "1":
		return "icmp", nil
	case "icmpv6", "58":
		return "icmpv6", nil
	case "-1", "all":
		return model.ProtocolAll, nil
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 255 {
		return "", model.InvalidParam("IpProtocol", "Invalid value '%s' for IP protocol. Unknown protocol.", p)
	}
	return strconv.Itoa(n), nil
}

// expand turns a permission into one rule per peer, validated.
func expand(groupID string, egress bool, p Permission, resolve func(PeerGroup) (string, error)) ([]model.GroupRule, error) {
	proto, err := NormalizeProtocol(p.Protocol)
	if err != nil {
		return nil, err
	}
	from, to := -1, -1
	if p.FromPort != nil {
		from = *p.FromPort
	}
	if p.ToPort != nil {
		to = *p.ToPort
	}
	switch proto {
	case "tcp", "udp":
		if p.FromPort == nil || p.ToPort == nil {
			return nil, model.MissingParam("FromPort/ToPort")
		}
		if from == -1 && to == -1 {
			from, to = 0, 65535
		}
		if from < 0 || to > 65535 || from > to {
			return nil, model.InvalidParam("FromPort", "Invalid port range %d-%d: ports run from 0 to 65535, FromPort first", from, to)
		}
	case "icmp", "icmpv6":
		if from < -1 || from > 255 || to < -1 || to > 255 {
			return nil, model.InvalidParam("FromPort", "Invalid ICMP type %d or code %d", from, to)
		}
		if from == -1 {
			to = -1
		}
	default:
		from, to = -1, -1
	}
	if len(p.CIDRs) == 0 && len(p.Groups) == 0 {
		return nil, model.MissingParam("IpPermissions.IpRanges or IpPermissions.Groups")
	}
	var out []model.GroupRule
	for _, c := range p.CIDRs {
		pfx, err := netip.ParsePrefix(c.CIDR)
		if err != nil {
			return nil, model.InvalidParam("CidrIp", "Value (%s) for parameter cidrIp is invalid. This is not a valid CIDR block.", c.CIDR)
		}
		if pfx.Masked() != pfx {
			return nil, model.InvalidParam("CidrIp", "Value (%s) for parameter cidrIp is invalid: host bits are set (did you mean %s?)", c.CIDR, pfx.Masked())
		}
		out = append(out, model.GroupRule{GroupID: groupID, Egress: egress, Protocol: proto, FromPort: from, ToPort: to,
			CIDR: pfx.String(), Description: c.Description})
	}
	for _, g := range p.Groups {
		id, err := resolve(g)
		if err != nil {
			return nil, err
		}
		out = append(out, model.GroupRule{GroupID: groupID, Egress: egress, Protocol: proto, FromPort: from, ToPort: to,
			PeerGroup: id, Description: g.Description})
	}
	for _, r := range out {
		if len(r.Description) > 255 {
			return nil, model.InvalidParam("Description", "Rule descriptions are at most 255 characters")
		}
	}
	return out, nil
}

// resolveGroup finds one of the caller's groups.
func (s *Service) resolveGroup(tx store.Tx, c Caller, ref GroupRef) (model.SecurityGroup, error) {
	if ref.ID != "" {
		if !model.ValidID(model.PrefixGroup, ref.ID) {
			return model.SecurityGroup{}, model.Malformed(model.ResGroup, ref.ID)
		}
		g, err := tx.GetGroup(ref.ID)
		if err != nil || g.AccountID != c.AccountID {
			return model.SecurityGroup{}, model.Errorf(model.KindNotFound, model.ResGroup, ref.ID, "The security group '%s' does not exist", ref.ID)
		}
		return g, nil
	}
	if ref.Name == "" {
		return model.SecurityGroup{}, model.MissingParam("GroupId")
	}
	v, err := s.ensureDefaultNetwork(tx, c.AccountID)
	if err != nil {
		return model.SecurityGroup{}, err
	}
	g, err := tx.GetGroupByName(v.ID, ref.Name)
	if err != nil {
		return model.SecurityGroup{}, model.Errorf(model.KindNotFound, model.ResGroup, ref.Name,
			"The security group '%s' does not exist in default VPC '%s'", ref.Name, v.ID)
	}
	return g, nil
}

// CreateSecurityGroup creates a group (in the default VPC unless vpcID is
// given) with AWS's default egress rule (all traffic anywhere).
func (s *Service) CreateSecurityGroup(ctx context.Context, c Caller, name, description, vpcID string, tags []model.Tag) (model.SecurityGroup, error) {
	switch {
	case name == "":
		return model.SecurityGroup{}, model.MissingParam("GroupName")
	case description == "":
		return model.SecurityGroup{}, model.MissingParam("GroupDescription")
	case !groupNameRE.MatchString(name) || strings.HasPrefix(name, model.PrefixGroup):
		return model.SecurityGroup{}, model.InvalidParam("GroupName", "Group names are 1-255 printable ASCII characters and cannot start with sg-")
	case strings.EqualFold(name, model.DefaultGroup):
		return model.SecurityGroup{}, model.Errorf(model.KindInvalidParameter, model.ResGroup, name, "Cannot use reserved security group name: default")
	case !groupNameRE.MatchString(description):
		return model.SecurityGroup{}, model.InvalidParam("GroupDescription", "Descriptions are 1-255 printable ASCII characters")
	}
	if err := validateTags(tags); err != nil {
		return model.SecurityGroup{}, err
	}
	var g model.SecurityGroup
	err := s.update(ctx, func(tx store.Tx) error {
		v, err := s.ensureDefaultNetwork(tx, c.AccountID)
		if err != nil {
			return err
		}
		if vpcID != "" && vpcID != v.ID {
			if vv, err := tx.GetVPC(vpcID); err != nil || vv.AccountID != c.AccountID {
				return model.Errorf(model.KindNotFound, model.ResVPC, vpcID, "The vpc ID '%s' does not exist", vpcID)
			}
			v.ID = vpcID
		}
		rev, err := tx.NextRev()
		if err != nil {
			return err
		}
		now := s.nowMS()
		g = model.SecurityGroup{ID: model.NewID(model.PrefixGroup), AccountID: c.AccountID, VPCID: v.ID, Name: name,
			Description: description, Rev: rev, Created: now, Tags: tags}
		if err := tx.InsertGroup(g); err != nil {
			return err
		}
		if err := tx.InsertRule(model.GroupRule{ID: model.NewID(model.PrefixRule), GroupID: g.ID, Egress: true,
			Protocol: model.ProtocolAll, FromPort: -1, ToPort: -1, CIDR: "0.0.0.0/0", Created: now}); err != nil {
			return err
		}
		return tx.SetTags(c.AccountID, g.ID, tags)
	})
	return g, err
}

// DeleteSecurityGroup deletes a group that no instance uses and no other
// group's rule refers to.
func (s *Service) DeleteSecurityGroup(ctx context.Context, c Caller, ref GroupRef) error {
	return s.update(ctx, func(tx store.Tx) error {
		g, err := s.resolveGroup(tx, c, ref)
		if err != nil {
			return err
		}
		if g.Name == model.DefaultGroup {
			return model.Errorf(model.KindInvalidParameter, "default-group", g.ID,
				"the specified group: \"%s\" name: \"default\" cannot be deleted by a user", g.ID)
		}
		n, err := tx.GroupInUse(g.ID)
		if err != nil {
			return err
		}
		if n > 0 {
			return model.Errorf(model.KindDependencyViolation, model.ResGroup, g.ID,
				"resource %s has a dependent object: %d instance(s) use it", g.ID, n)
		}
		refs, err := tx.RulesReferencing(g.ID)
		if err != nil {
			return err
		}
		for _, r := range refs {
			if r.GroupID != g.ID {
				return model.Errorf(model.KindDependencyViolation, model.ResGroup, g.ID,
					"resource %s has a dependent object: a rule of %s refers to it", g.ID, r.GroupID)
			}
		}
		return tx.DeleteGroup(g.ID)
	})
}

// GroupView is a group with its rules, for Describe.
type GroupView struct {
	model.SecurityGroup
	Rules []model.GroupRule
}

func groupFields(g *GroupView) fieldFunc {
	return func(name string) ([]string, bool) {
		switch name {
		case "group-id":
			return []string{g.ID}, true
		case "group-name":
			return []string{g.Name}, true
		case "description":
			return []string{g.Description}, true
		case "vpc-id":
			return []string{g.VPCID}, true
		case "owner-id":
			return []string{g.AccountID}, true
		}
		if field, ok := strings.CutPrefix(name, "egress.ip-permission."); ok {
			return ruleValues(g.Rules, true, field)
		}
		if field, ok := strings.CutPrefix(name, "ip-permission."); ok {
			return ruleValues(g.Rules, false, field)
		}
		return tagField(g.Tags, name)
	}
}

func ruleValues(rules []model.GroupRule, egress bool, field string) ([]string, bool) {
	var out []string
	for _, r := range rules {
		if r.Egress != egress {
			continue
		}
		switch field {
		case "cidr":
			out = append(out, r.CIDR)
		case "from-port":
			out = append(out, strconv.Itoa(r.FromPort))
		case "to-port":
			out = append(out, strconv.Itoa(r.ToPort))
		case "protocol":
			out = append(out, r.Protocol)
		case "group-id":
			out = append(out, r.PeerGroup)
		default:
			return nil, false
		}
	}
	return out, true
}

// DescribeSecurityGroups lists groups with their rules.
func (s *Service) DescribeSecurityGroups(ctx context.Context, c Caller, ids, names []string, filters []Filter, pg Page) ([]GroupView, string, error) {
	for _, id := range ids {
		if !model.ValidID(model.PrefixGroup, id) {
			return nil, "", model.Malformed(model.ResGroup, id)
		}
	}
	if err := checkMaxResults(pg, 5, 1000, len(ids) > 0 || len(names) > 0); err != nil {
		return nil, "", err
	}
	if err := checkFilters(filters, groupFields(&GroupView{})); err != nil {
		return nil, "", err
	}
	var views []GroupView
	err := s.update(ctx, func(tx store.Tx) error {
		views = nil
		if _, err := s.ensureDefaultNetwork(tx, c.AccountID); err != nil {
			return err
		}
		groups, err := tx.ListGroups(c.AccountID)
		if err != nil {
			return err
		}
		rules, err := tx.Rules(c.AccountID, nil)
		if err != nil {
			return err
		}
		tags, err := tx.Tags(c.AccountID, nil)
		if err != nil {
			return err
		}
		byGroup := map[string][]model.GroupRule{}
		for _, r := range rules {
			byGroup[r.GroupID] = append(byGroup[r.GroupID], r)
		}
		for _, g := range groups {
			g.Tags = tags[g.ID]
			views = append(views, GroupView{SecurityGroup: g, Rules: byGroup[g.ID]})
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	wantIDs, wantNames := map[string]bool{}, map[string]bool{}
	for _, id := range ids {
		wantIDs[id] = true
	}
	for _, n := range names {
		wantNames[n] = true
	}
	var out []GroupView
	for i := range views {
		v := &views[i]
		if (len(ids) > 0 || len(names) > 0) && !wantIDs[v.ID] && !(wantNames[v.Name] && v.VPCID == s.DefaultVPC(c.AccountID)) {
			continue
		}
		delete(wantIDs, v.ID)
		if v.VPCID == s.DefaultVPC(c.AccountID) {
			delete(wantNames, v.Name)
		}
		if matchFilters(filters, groupFields(v)) {
			out = append(out, *v)
		}
	}
	for id := range wantIDs {
		return nil, "", model.Errorf(model.KindNotFound, model.ResGroup, id, "The security group '%s' does not exist", id)
	}
	for n := range wantNames {
		return nil, "", model.Errorf(model.KindNotFound, model.ResGroup, n, "The security group '%s' does not exist in default VPC", n)
	}
	keys := make([]string, len(out))
	for i := range out {
		keys[i] = out[i].ID
	}
	start, end, next, err := pageIDs(keys, pg)
	if err != nil {
		return nil, "", err
	}
	return out[start:end], next, nil
}

// ChangeRules authorizes (add) or revokes permissions of a group. Revoking
// may also name rules by ID. It returns the rules added or removed.
func (s *Service) ChangeRules(ctx context.Context, c Caller, ref GroupRef, egress, add bool, perms []Permission, ruleIDs []string) ([]model.GroupRule, error) {
	if len(perms) == 0 && len(ruleIDs) == 0 {
		return nil, model.MissingParam("IpPermissions")
	}
	if add && len(ruleIDs) > 0 {
		return nil, model.InvalidParam("SecurityGroupRuleId", "Rule IDs are for revoking rules")
	}
	var changed []model.GroupRule
	var group model.SecurityGroup
	err := s.update(ctx, func(tx store.Tx) error {
		changed = nil
		g, err := s.resolveGroup(tx, c, ref)
		if err != nil {
			return err
		}
		group = g
		resolve := func(p PeerGroup) (string, error) {
			peer, err := s.resolveGroup(tx, c, GroupRef{ID: p.GroupID, Name: p.GroupName})
			if err != nil {
				return "", err
			}
			if peer.VPCID != g.VPCID {
				return "", model.InvalidParam("Groups", "Security group %s is in another VPC", peer.ID)
			}
			return peer.ID, nil
		}
		var want []model.GroupRule
		for _, p := range perms {
			rs, err := expand(g.ID, egress, p, resolve)
			if err != nil {
				return err
			}
			want = append(want, rs...)
		}
		existing, err := tx.Rules(c.AccountID, []string{g.ID})
		if err != nil {
			return err
		}
		if add {
			if changed, err = s.addRules(tx, existing, want); err != nil {
				return err
			}
		} else if changed, err = s.removeRules(tx, egress, existing, want, ruleIDs); err != nil {
			return err
		}
		rev, err := tx.NextRev()
		if err != nil {
			return err
		}
		return tx.SetGroupRev(g.ID, rev)
	})
	if err != nil {
		return nil, err
	}
	s.notifyGroup(ctx, group.ID)
	return changed, nil
}

func (s *Service) addRules(tx store.Tx, existing, want []model.GroupRule) ([]model.GroupRule, error) {
	if len(existing)+len(want) > MaxRulesPerGroup {
		return nil, model.Errorf(model.KindLimitExceeded, model.ResRule, "", "A security group can have at most %d rules", MaxRulesPerGroup)
	}
	now := s.nowMS()
	for i, r := range want {
		for _, e := range append(existing, want[:i]...) {
			if e.SameRule(r) {
				return nil, model.Errorf(model.KindDuplicate, model.ResPermission, r.GroupID,
					"the specified rule \"peer: %s, %s, from port: %d, to port: %d, ALLOW\" already exists", peerOf(r), r.Protocol, r.FromPort, r.ToPort)
			}
		}
		want[i].ID, want[i].Created = model.NewID(model.PrefixRule), now
		if err := tx.InsertRule(want[i]); err != nil {
			return nil, err
		}
	}
	return want, nil
}

func (s *Service) removeRules(tx store.Tx, egress bool, existing, want []model.GroupRule, ids []string) ([]model.GroupRule, error) {
	var gone []model.GroupRule
	for _, w := range want {
		found := false
		for _, e := range existing {
			if e.SameRule(w) {
				gone, found = append(gone, e), true
				break
			}
		}
		if !found {
			return nil, model.Errorf(model.KindNotFound, model.ResPermission, w.GroupID,
				"The specified rule does not exist in this security group (peer: %s, %s, ports %d-%d)", peerOf(w), w.Protocol, w.FromPort, w.ToPort)
		}
	}
	for _, id := range ids {
		found := false
		for _, e := range existing {
			if e.ID == id && e.Egress == egress {
				gone, found = append(gone, e), true
			}
		}
		if !found {
			return nil, model.Errorf(model.KindNotFound, model.ResRule, id, "The security group rule ID '%s' does not exist", id)
		}
	}
	for _, r := range gone {
		if err := tx.DeleteRule(r.ID); err != nil {
			return nil, err
		}
	}
	return gone, nil
}

// MaxRulesPerGroup bounds the rules of one group (AWS allows 60 per
// direction by default; Clipper's nft sets make large groups cheap).
const MaxRulesPerGroup = 5000

func peerOf(r model.GroupRule) string {
	if r.CIDR != "" {
		return r.CIDR
	}
	return r.PeerGroup
}

// notifyGroup wakes the nodes that enforce a group.
func (s *Service) notifyGroup(ctx context.Context, groupID string) {
	var nodes []string
	err := s.view(ctx, func(tx store.Tx) error {
		var err error
		nodes, err = tx.GroupNodes([]string{groupID})
		return err
	})
	if err != nil {
		s.log.Warn("find nodes of a group", "group", groupID, "error", err)
		return
	}
	s.notify.NodesChanged(nodes...)
}

// RuleView is a rule with its group's owner, for DescribeSecurityGroupRules.
type RuleView struct {
	model.GroupRule
	OwnerID string
	Tags    []model.Tag
}

// DescribeSecurityGroupRules lists rules by ID or filter.
func (s *Service) DescribeSecurityGroupRules(ctx context.Context, c Caller, ids []string, filters []Filter, pg Page) ([]RuleView, string, error) {
	fields := func(r *RuleView) fieldFunc {
		return func(name string) ([]string, bool) {
			switch name {
			case "group-id":
				return []string{r.GroupID}, true
			case "security-group-rule-id":
				return []string{r.ID}, true
			}
			return tagField(r.Tags, name)
		}
	}
	if err := checkFilters(filters, fields(&RuleView{})); err != nil {
		return nil, "", err
	}
	if err := checkMaxResults(pg, 5, 1000, len(ids) > 0); err != nil {
		return nil, "", err
	}
	var rules []model.GroupRule
	var tags map[string][]model.Tag
	err := s.view(ctx, func(tx store.Tx) error {
		var err error
		if rules, err = tx.Rules(c.AccountID, nil); err != nil {
			return err
		}
		tags, err = tx.Tags(c.AccountID, nil)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	views := make([]RuleView, len(rules))
	for i, r := range rules {
		views[i] = RuleView{GroupRule: r, OwnerID: c.AccountID, Tags: tags[r.ID]}
	}
	sort.Slice(views, func(i, j int) bool { return views[i].ID < views[j].ID })
	out, err := filterByID(views, ids, func(r RuleView) string { return r.ID }, model.ResRule, "security group rule",
		func(r *RuleView) bool { return matchFilters(filters, fields(r)) })
	if err != nil {
		return nil, "", err
	}
	keys := make([]string, len(out))
	for i := range out {
		keys[i] = out[i].ID
	}
	start, end, next, err := pageIDs(keys, pg)
	if err != nil {
		return nil, "", err
	}
	return out[start:end], next, nil
}

// resolveInstanceGroups turns RunInstances' group IDs and names into IDs in
// the subnet's VPC; none means the VPC's default group. It also returns the
// names of those of the caller's groups, by ID (what GroupNames would say).
func (s *Service) resolveInstanceGroups(tx store.Tx, c Caller, vpcID string, ids, names []string) ([]string, map[string]string, error) {
	var out []string
	byID := map[string]string{}
	add := func(g model.SecurityGroup) error {
		if g.VPCID != vpcID {
			return model.InvalidParam("SecurityGroupId", "Security group %s and the subnet belong to different networks", g.ID)
		}
		if _, seen := byID[g.ID]; !seen {
			byID[g.ID] = g.Name
			out = append(out, g.ID)
		}
		return nil
	}
	for _, id := range ids {
		g, err := s.resolveGroup(tx, c, GroupRef{ID: id})
		if err != nil {
			return nil, nil, err
		}
		if err := add(g); err != nil {
			return nil, nil, err
		}
	}
	for _, n := range names {
		g, err := tx.GetGroupByName(vpcID, n)
		if err != nil || g.AccountID != c.AccountID {
			return nil, nil, model.Errorf(model.KindNotFound, model.ResGroup, n, "The security group '%s' does not exist in VPC '%s'", n, vpcID)
		}
		if err := add(g); err != nil {
			return nil, nil, err
		}
	}
	if len(out) > 5 {
		return nil, nil, model.Errorf(model.KindLimitExceeded, model.ResGroup, "", "An instance can be in at most 5 security groups")
	}
	if len(out) == 0 {
		g, err := tx.GetGroupByName(vpcID, model.DefaultGroup)
		if err != nil {
			return nil, nil, fmt.Errorf("VPC %s has no default group: %w", vpcID, err)
		}
		out = []string{g.ID}
		if g.AccountID == c.AccountID {
			byID[g.ID] = g.Name
		}
	}
	return out, byID, nil
}

// ExpandForCheck validates a permission the way Authorize does, with peer
// groups taken as given (for fuzz tests of the edge decoders).
func ExpandForCheck(p Permission) ([]model.GroupRule, error) {
	return expand("sg-00000000", false, p, func(g PeerGroup) (string, error) {
		if g.GroupID == "" {
			return "", model.MissingParam("GroupId")
		}
		return g.GroupID, nil
	})
}
