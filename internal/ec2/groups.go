package ec2

import (
	"context"
	"sort"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/service"
)

type rangeXML struct {
	CidrIP      string `xml:"cidrIp"`
	Description string `xml:"description,omitempty"`
}

type range6XML struct {
	CidrIPv6    string `xml:"cidrIpv6"`
	Description string `xml:"description,omitempty"`
}

type userGroupXML struct {
	UserID      string `xml:"userId"`
	GroupID     string `xml:"groupId"`
	Description string `xml:"description,omitempty"`
}

type permissionXML struct {
	IPProtocol    string             `xml:"ipProtocol"`
	FromPort      *int               `xml:"fromPort,omitempty"`
	ToPort        *int               `xml:"toPort,omitempty"`
	Groups        List[userGroupXML] `xml:"groups"`
	IPRanges      List[rangeXML]     `xml:"ipRanges"`
	IPv6Ranges    List[range6XML]    `xml:"ipv6Ranges"`
	PrefixListIDs List[struct{}]     `xml:"prefixListIds"`
}

type groupInfoXML struct {
	OwnerID             string              `xml:"ownerId"`
	GroupID             string              `xml:"groupId"`
	GroupName           string              `xml:"groupName"`
	GroupDescription    string              `xml:"groupDescription"`
	VpcID               string              `xml:"vpcId"`
	IPPermissions       List[permissionXML] `xml:"ipPermissions"`
	IPPermissionsEgress List[permissionXML] `xml:"ipPermissionsEgress"`
	TagSet              List[TagXML]        `xml:"tagSet"`
	SecurityGroupArn    string              `xml:"securityGroupArn"`
}

type referencedGroupXML struct {
	GroupID string `xml:"groupId"`
	UserID  string `xml:"userId"`
}

type ruleXML struct {
	SecurityGroupRuleID string              `xml:"securityGroupRuleId"`
	GroupID             string              `xml:"groupId"`
	GroupOwnerID        string              `xml:"groupOwnerId"`
	IsEgress            bool                `xml:"isEgress"`
	IPProtocol          string              `xml:"ipProtocol"`
	FromPort            int                 `xml:"fromPort"`
	ToPort              int                 `xml:"toPort"`
	CidrIPv4            string              `xml:"cidrIpv4,omitempty"`
	CidrIPv6            string              `xml:"cidrIpv6,omitempty"`
	ReferencedGroupInfo *referencedGroupXML `xml:"referencedGroupInfo,omitempty"`
	Description         string              `xml:"description,omitempty"`
	TagSet              List[TagXML]        `xml:"tagSet"`
}

type createGroupResponse struct {
	Meta
	GroupID          string       `xml:"groupId"`
	TagSet           List[TagXML] `xml:"tagSet"`
	SecurityGroupArn string       `xml:"securityGroupArn"`
}

type describeGroupsResponse struct {
	Meta
	SecurityGroupInfo List[groupInfoXML] `xml:"securityGroupInfo"`
	NextToken         string             `xml:"nextToken,omitempty"`
}

type ruleChangeResponse struct {
	Meta
	Return               bool                `xml:"return"`
	SecurityGroupRuleSet List[ruleXML]       `xml:"securityGroupRuleSet"`
	UnknownIPPermissions List[permissionXML] `xml:"unknownIpPermissionSet"`
}

type describeRulesResponse struct {
	Meta
	SecurityGroupRuleSet List[ruleXML] `xml:"securityGroupRuleSet"`
	NextToken            string        `xml:"nextToken,omitempty"`
}

func (h *Handler) registerGroups() {
	h.actions["CreateSecurityGroup"] = h.createSecurityGroup
	h.actions["DeleteSecurityGroup"] = h.deleteSecurityGroup
	h.actions["DescribeSecurityGroups"] = h.describeSecurityGroups
	h.actions["DescribeSecurityGroupRules"] = h.describeSecurityGroupRules
	h.actions["AuthorizeSecurityGroupIngress"] = h.changeRules(false, true)
	h.actions["AuthorizeSecurityGroupEgress"] = h.changeRules(true, true)
	h.actions["RevokeSecurityGroupIngress"] = h.changeRules(false, false)
	h.actions["RevokeSecurityGroupEgress"] = h.changeRules(true, false)
}

func groupArn(region, account, id string) string {
	return "arn:aws:ec2:" + region + ":" + account + ":security-group/" + id
}

func (h *Handler) createSecurityGroup(p *Params) (exec, error) {
	name, desc, vpc := p.Str("GroupName"), p.Str("GroupDescription"), p.Str("VpcId")
	tags, err := p.TagSpecifications("security-group")
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, c service.Caller) (response, error) {
		g, err := h.svc.CreateSecurityGroup(ctx, c, name, desc, vpc, tags)
		if err != nil {
			return nil, err
		}
		return &createGroupResponse{GroupID: g.ID, TagSet: tagsXML(g.Tags),
			SecurityGroupArn: groupArn(h.svc.Config().Region, c.AccountID, g.ID)}, nil
	}, nil
}

func (h *Handler) deleteSecurityGroup(p *Params) (exec, error) {
	ref := service.GroupRef{ID: p.Str("GroupId"), Name: p.Str("GroupName")}
	if ref.ID == "" && ref.Name == "" {
		return nil, model.MissingParam("GroupId")
	}
	return func(ctx context.Context, c service.Caller) (response, error) {
		if err := h.svc.DeleteSecurityGroup(ctx, c, ref); err != nil {
			return nil, err
		}
		return &BoolResponse{Return: true}, nil
	}, nil
}

// permissionsXML groups rules by protocol and ports the way EC2 lists them.
func permissionsXML(rules []model.GroupRule, egress bool, owner string) List[permissionXML] {
	out := List[permissionXML]{}
	index := map[[3]any]int{}
	for _, r := range rules {
		if r.Egress != egress {
			continue
		}
		key := [3]any{r.Protocol, r.FromPort, r.ToPort}
		k, ok := index[key]
		if !ok {
			k = len(out)
			index[key] = k
			pm := permissionXML{IPProtocol: r.Protocol, Groups: List[userGroupXML]{}, IPRanges: List[rangeXML]{},
				IPv6Ranges: List[range6XML]{}, PrefixListIDs: List[struct{}]{}}
			if r.Protocol != model.ProtocolAll {
				from, to := r.FromPort, r.ToPort
				pm.FromPort, pm.ToPort = &from, &to
			}
			out = append(out, pm)
		}
		switch {
		case r.PeerGroup != "":
			out[k].Groups = append(out[k].Groups, userGroupXML{UserID: owner, GroupID: r.PeerGroup, Description: r.Description})
		case isIPv6(r.CIDR):
			out[k].IPv6Ranges = append(out[k].IPv6Ranges, range6XML{CidrIPv6: r.CIDR, Description: r.Description})
		default:
			out[k].IPRanges = append(out[k].IPRanges, rangeXML{CidrIP: r.CIDR, Description: r.Description})
		}
	}
	return out
}

func isIPv6(cidr string) bool {
	for i := 0; i < len(cidr); i++ {
		if cidr[i] == ':' {
			return true
		}
	}
	return false
}

func (h *Handler) describeSecurityGroups(p *Params) (exec, error) {
	ids, err := p.List("GroupId")
	if err != nil {
		return nil, err
	}
	names, err := p.List("GroupName")
	if err != nil {
		return nil, err
	}
	filters, err := p.Filters()
	if err != nil {
		return nil, err
	}
	pg, err := p.Page()
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, c service.Caller) (response, error) {
		groups, next, err := h.svc.DescribeSecurityGroups(ctx, c, ids, names, filters, pg)
		if err != nil {
			return nil, err
		}
		out := &describeGroupsResponse{SecurityGroupInfo: List[groupInfoXML]{}, NextToken: next}
		for _, g := range groups {
			out.SecurityGroupInfo = append(out.SecurityGroupInfo, groupInfoXML{OwnerID: g.AccountID, GroupID: g.ID,
				GroupName: g.Name, GroupDescription: g.Description, VpcID: g.VPCID,
				IPPermissions:       permissionsXML(g.Rules, false, g.AccountID),
				IPPermissionsEgress: permissionsXML(g.Rules, true, g.AccountID),
				TagSet:              tagsXML(g.Tags), SecurityGroupArn: groupArn(h.svc.Config().Region, g.AccountID, g.ID)})
		}
		return out, nil
	}, nil
}

// decodePermissions reads IpPermissions.N, or the legacy top-level form
// (IpProtocol, FromPort, ToPort, CidrIp, SourceSecurityGroupName).
func decodePermissions(p *Params) ([]service.Permission, error) {
	subs, err := p.Structs("IpPermissions")
	if err != nil {
		return nil, err
	}
	var out []service.Permission
	for _, s := range subs {
		perm, err := decodePermission(s)
		if err != nil {
			return nil, err
		}
		out = append(out, perm)
	}
	if proto := p.Str("IpProtocol"); proto != "" || p.Has("CidrIp") || p.Has("SourceSecurityGroupName") {
		perm := service.Permission{Protocol: proto}
		if perm.FromPort, err = optInt(p, "FromPort"); err != nil {
			return nil, err
		}
		if perm.ToPort, err = optInt(p, "ToPort"); err != nil {
			return nil, err
		}
		if cidr := p.Str("CidrIp"); cidr != "" {
			perm.CIDRs = []service.PeerCIDR{{CIDR: cidr}}
		}
		if name := p.Str("SourceSecurityGroupName"); name != "" {
			perm.Groups = []service.PeerGroup{{GroupName: name, UserID: p.Str("SourceSecurityGroupOwnerId")}}
		}
		if perm.Protocol == "" {
			perm.Protocol = model.ProtocolAll
		}
		out = append(out, perm)
	}
	return out, nil
}

func decodePermission(s *Params) (service.Permission, error) {
	var perm service.Permission
	var err error
	if perm.Protocol, err = s.Required("IpProtocol"); err != nil {
		return perm, err
	}
	if perm.FromPort, err = optInt(s, "FromPort"); err != nil {
		return perm, err
	}
	if perm.ToPort, err = optInt(s, "ToPort"); err != nil {
		return perm, err
	}
	for _, list := range []struct{ name, field string }{{"IpRanges", "CidrIp"}, {"Ipv6Ranges", "CidrIpv6"}} {
		ranges, err := s.Structs(list.name)
		if err != nil {
			return perm, err
		}
		for _, r := range ranges {
			cidr, err := r.Required(list.field)
			if err != nil {
				return perm, err
			}
			perm.CIDRs = append(perm.CIDRs, service.PeerCIDR{CIDR: cidr, Description: r.Str("Description")})
		}
	}
	groups, err := s.Structs("Groups")
	if err != nil {
		return perm, err
	}
	for _, g := range groups {
		pg := service.PeerGroup{GroupID: g.Str("GroupId"), GroupName: g.Str("GroupName"), UserID: g.Str("UserId"),
			Description: g.Str("Description")}
		g.Ignore("VpcId", "VpcPeeringConnectionId", "PeeringStatus")
		if pg.GroupID == "" && pg.GroupName == "" {
			return perm, model.MissingParam("Groups.GroupId")
		}
		perm.Groups = append(perm.Groups, pg)
	}
	if lists, _ := s.Structs("PrefixListIds"); len(lists) > 0 {
		return perm, model.Errorf(model.KindUnsupported, "", "PrefixListIds", "Prefix lists are not supported")
	}
	return perm, nil
}

func optInt(p *Params, name string) (*int, error) {
	if !p.Has(name) {
		return nil, nil
	}
	v, err := p.Int(name, 0)
	if err != nil {
		return nil, err
	}
	return &v, nil
}

func toRuleXML(r model.GroupRule, owner string, tags []model.Tag) ruleXML {
	x := ruleXML{SecurityGroupRuleID: r.ID, GroupID: r.GroupID, GroupOwnerID: owner, IsEgress: r.Egress,
		IPProtocol: r.Protocol, FromPort: r.FromPort, ToPort: r.ToPort, Description: r.Description, TagSet: tagsXML(tags)}
	switch {
	case r.PeerGroup != "":
		x.ReferencedGroupInfo = &referencedGroupXML{GroupID: r.PeerGroup, UserID: owner}
	case isIPv6(r.CIDR):
		x.CidrIPv6 = r.CIDR
	default:
		x.CidrIPv4 = r.CIDR
	}
	return x
}

func (h *Handler) changeRules(egress, add bool) parser {
	return func(p *Params) (exec, error) {
		ref := service.GroupRef{ID: p.Str("GroupId"), Name: p.Str("GroupName")}
		if ref.ID == "" && ref.Name == "" {
			return nil, model.MissingParam("GroupId")
		}
		perms, err := decodePermissions(p)
		if err != nil {
			return nil, err
		}
		ruleIDs, err := p.List("SecurityGroupRuleId")
		if err != nil {
			return nil, err
		}
		if _, err := p.TagSpecifications("security-group-rule"); err != nil {
			return nil, err
		}
		return func(ctx context.Context, c service.Caller) (response, error) {
			rules, err := h.svc.ChangeRules(ctx, c, ref, egress, add, perms, ruleIDs)
			if err != nil {
				return nil, err
			}
			out := &ruleChangeResponse{Return: true, SecurityGroupRuleSet: List[ruleXML]{}, UnknownIPPermissions: List[permissionXML]{}}
			if add {
				for _, r := range rules {
					out.SecurityGroupRuleSet = append(out.SecurityGroupRuleSet, toRuleXML(r, c.AccountID, nil))
				}
			}
			return out, nil
		}, nil
	}
}

func (h *Handler) describeSecurityGroupRules(p *Params) (exec, error) {
	ids, err := p.List("SecurityGroupRuleId")
	if err != nil {
		return nil, err
	}
	filters, err := p.Filters()
	if err != nil {
		return nil, err
	}
	pg, err := p.Page()
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, c service.Caller) (response, error) {
		rules, next, err := h.svc.DescribeSecurityGroupRules(ctx, c, ids, filters, pg)
		if err != nil {
			return nil, err
		}
		sort.SliceStable(rules, func(i, j int) bool { return rules[i].ID < rules[j].ID })
		out := &describeRulesResponse{SecurityGroupRuleSet: List[ruleXML]{}, NextToken: next}
		for _, r := range rules {
			out.SecurityGroupRuleSet = append(out.SecurityGroupRuleSet, toRuleXML(r.GroupRule, r.OwnerID, r.Tags))
		}
		return out, nil
	}, nil
}
