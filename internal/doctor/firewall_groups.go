package doctor

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// This file audits an account's security groups, as a controller's
// DescribeSecurityGroups shows them. Security groups are allow lists: a
// group drops ICMP "fragmentation needed" / "packet too big" when none of
// its inbound rules lets it in from the router that sends it, which may be
// anywhere on the path. Clipper's nodes accept both messages before any
// group rule (internal/network), so for a Clipper controller no group can
// drop them and the audit says so instead of flagging the groups.

// SecurityGroup is a security group with its inbound rules.
type SecurityGroup struct {
	ID, Name, VPCID string
	Ingress         []Permission
}

// Permission is one inbound rule as EC2 describes it (an IpPermission).
type Permission struct {
	// Protocol is EC2's ipProtocol: "icmp", "icmpv6", "tcp", "-1" (all),
	// or a protocol number.
	Protocol string
	// FromPort and ToPort are the ICMP type and code for ICMP rules, -1
	// meaning any.
	FromPort, ToPort int
	// CIDRs are the IPv4 and IPv6 source ranges; Others counts sources the
	// audit cannot place (source groups, prefix lists).
	CIDRs  []string
	Others int
}

// Allowance says from where a group's rules let an ICMP error in.
type Allowance string

// Allowances, from best to worst.
const (
	AllowAll  Allowance = "all"  // from any address
	AllowSome Allowance = "some" // only from some sources
	AllowNone Allowance = "none" // no rule lets it in
)

// GroupSource reads an account's security groups from a controller.
type GroupSource struct {
	// Endpoint names the controller in the report.
	Endpoint string
	// List returns the groups (DescribeSecurityGroups).
	List func(ctx context.Context) ([]SecurityGroup, error)
	// Clipper is true when the controller is Clipper's: its nodes accept
	// frag-needed and packet-too-big before any group rule.
	Clipper bool
}

// GroupFinding is what the audit says about one security group that does
// not let frag-needed or packet-too-big in from everywhere.
type GroupFinding struct {
	Source    string `json:"source"`
	GroupID   string `json:"group_id"`
	GroupName string `json:"group_name"`
	VPCID     string `json:"vpc_id,omitempty"`
	// FragNeeded and PacketTooBig say from where the group's inbound rules
	// let ICMP type 3 code 4 and ICMPv6 type 2 in: all, some or none.
	FragNeeded   Allowance `json:"frag_needed"`
	PacketTooBig Allowance `json:"packet_too_big"`
	// Covered is true when the controller's nodes accept both messages
	// before the group's rules, so the group cannot drop them; Severity is
	// then "info", else "problem".
	Covered  bool   `json:"covered"`
	Severity string `json:"severity"`
	Why      string `json:"why"`
	Fix      []Fix  `json:"fix,omitempty"`
}

// Problem reports whether the finding needs action.
func (g GroupFinding) Problem() bool { return g.Severity == "problem" }

// AuditGroups judges every group's inbound rules for frag-needed (IPv4)
// and packet-too-big (IPv6). Groups that let both in from anywhere are
// not listed. With clipper set every finding is informational.
func AuditGroups(source string, groups []SecurityGroup, clipper bool) []GroupFinding {
	out := []GroupFinding{}
	for _, g := range groups {
		f := GroupFinding{Source: source, GroupID: g.ID, GroupName: g.Name, VPCID: g.VPCID,
			FragNeeded: allowance(g.Ingress, false), PacketTooBig: allowance(g.Ingress, true), Covered: clipper}
		if f.FragNeeded == AllowAll && f.PacketTooBig == AllowAll {
			continue
		}
		what := groupGap(f)
		if clipper {
			f.Severity = "info"
			f.Why = what + ". Clipper's nodes accept frag-needed and packet-too-big before any group rule, so path-MTU discovery works for the group's instances: no action. (On EC2 itself the group would need an inbound custom ICMP rule for them.)"
		} else {
			f.Severity = "problem"
			f.Why = what + ": the group drops them from routers outside those sources, and its instances never learn the path MTU of their connections"
			f.Fix = groupFixes(f)
		}
		out = append(out, f)
	}
	return out
}

func groupGap(f GroupFinding) string {
	var parts []string
	for _, x := range []struct {
		name string
		a    Allowance
	}{{`ICMP "fragmentation needed" (type 3 code 4)`, f.FragNeeded}, {`ICMPv6 "packet too big" (type 2)`, f.PacketTooBig}} {
		switch x.a {
		case AllowNone:
			parts = append(parts, "no inbound rule lets "+x.name+" in")
		case AllowSome:
			parts = append(parts, "inbound rules let "+x.name+" in from some sources only")
		}
	}
	return strings.Join(parts, "; ")
}

func groupFixes(f GroupFinding) []Fix {
	var fs []Fix
	if f.FragNeeded != AllowAll {
		fs = append(fs, Fix{Party: "security group", Action: "let ICMP fragmentation-needed in from anywhere",
			Command: fmt.Sprintf("aws ec2 authorize-security-group-ingress --group-id %s --ip-permissions 'IpProtocol=icmp,FromPort=3,ToPort=4,IpRanges=[{CidrIp=0.0.0.0/0}]'", f.GroupID)})
	}
	if f.PacketTooBig != AllowAll {
		fs = append(fs, Fix{Party: "security group", Action: "let ICMPv6 packet-too-big in from anywhere",
			Command: fmt.Sprintf("aws ec2 authorize-security-group-ingress --group-id %s --ip-permissions 'IpProtocol=icmpv6,FromPort=2,ToPort=-1,Ipv6Ranges=[{CidrIpv6=::/0}]'", f.GroupID)})
	}
	return fs
}

// allowance says from where rules let the ICMP error of the family in.
func allowance(rules []Permission, v6 bool) Allowance {
	best := AllowNone
	for _, p := range rules {
		if !p.admitsICMPError(v6) {
			continue
		}
		if p.fromAnywhere(v6) {
			return AllowAll
		}
		if p.Others > 0 || len(p.CIDRs) > 0 {
			best = AllowSome
		}
	}
	return best
}

// admitsICMPError reports whether the rule's protocol, type and code
// cover frag-needed (IPv4) or packet-too-big (IPv6).
func (p Permission) admitsICMPError(v6 bool) bool {
	proto := strings.ToLower(p.Protocol)
	if proto == "-1" || proto == "all" {
		return true
	}
	want, typ, code := "icmp", 3, 4
	if v6 {
		want, typ, code = "icmpv6", 2, 0
	}
	if n, err := strconv.Atoi(proto); err == nil {
		proto = map[int]string{1: "icmp", 58: "icmpv6"}[n]
	}
	if proto != want {
		return false
	}
	return (p.FromPort == -1 || p.FromPort == typ) && (p.ToPort == -1 || p.ToPort == code)
}

// fromAnywhere reports whether a rule's sources include every address of
// the family.
func (p Permission) fromAnywhere(v6 bool) bool {
	for _, c := range p.CIDRs {
		pf, err := netip.ParsePrefix(c)
		if err == nil && pf.Bits() == 0 && pf.Addr().Is6() == v6 {
			return true
		}
	}
	return false
}

// AuditGroups reads the groups of src and adds what it finds to the
// report. A controller that cannot be read is listed as skipped, with
// why: the host's own rules are worth reporting without it.
func (r *FirewallReport) AuditGroups(ctx context.Context, src GroupSource) {
	name := "security groups at " + src.Endpoint
	groups, err := src.List(ctx)
	if err != nil {
		if r.Skipped == nil {
			r.Skipped = map[string]string{}
		}
		r.Skipped[name] = err.Error()
		return
	}
	r.Sources = append(r.Sources, name)
	r.GroupsRead += len(groups)
	r.Groups = append(r.Groups, AuditGroups(name, groups, src.Clipper)...)
}

// writeGroups writes the security group part of the text report.
func (r *FirewallReport) writeGroups(w io.Writer) {
	if r.GroupsRead == 0 && len(r.Groups) == 0 {
		return
	}
	fmt.Fprintf(w, "\nsecurity groups: %d read, %d do not let frag-needed / packet-too-big in from everywhere\n", r.GroupsRead, len(r.Groups))
	for _, g := range r.Groups {
		fmt.Fprintf(w, "\n%s (%s", g.GroupID, g.GroupName)
		if g.VPCID != "" {
			fmt.Fprintf(w, ", %s", g.VPCID)
		}
		fmt.Fprintf(w, ")\n  what   %s: %s\n", g.Severity, g.Why)
		for _, f := range g.Fix {
			fmt.Fprintf(w, "  fix    %s\n         %s\n", f.Action, f.Command)
		}
	}
}
