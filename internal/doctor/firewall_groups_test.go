package doctor

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestAllowance(t *testing.T) {
	icmp := func(from, to int, cidrs ...string) Permission {
		return Permission{Protocol: "icmp", FromPort: from, ToPort: to, CIDRs: cidrs}
	}
	for _, tt := range []struct {
		name   string
		rules  []Permission
		v4, v6 Allowance
	}{
		{"no rules", nil, AllowNone, AllowNone},
		{"ssh only", []Permission{{Protocol: "tcp", FromPort: 22, ToPort: 22, CIDRs: []string{"0.0.0.0/0", "::/0"}}}, AllowNone, AllowNone},
		{"all traffic from anywhere", []Permission{{Protocol: "-1", FromPort: -1, ToPort: -1, CIDRs: []string{"0.0.0.0/0", "::/0"}}}, AllowAll, AllowAll},
		{"all traffic from the group (the default group)", []Permission{{Protocol: "-1", FromPort: -1, ToPort: -1, Others: 1}}, AllowSome, AllowSome},
		{"all ICMP from anywhere", []Permission{icmp(-1, -1, "0.0.0.0/0")}, AllowAll, AllowNone},
		{"frag-needed by type and code", []Permission{icmp(3, 4, "0.0.0.0/0")}, AllowAll, AllowNone},
		{"destination unreachable, any code", []Permission{icmp(3, -1, "0.0.0.0/0")}, AllowAll, AllowNone},
		{"echo only", []Permission{icmp(8, -1, "0.0.0.0/0")}, AllowNone, AllowNone},
		{"port unreachable only", []Permission{icmp(3, 3, "0.0.0.0/0")}, AllowNone, AllowNone},
		{"frag-needed from a LAN", []Permission{icmp(3, 4, "10.0.0.0/8")}, AllowSome, AllowNone},
		{"ICMPv6 by number", []Permission{{Protocol: "58", FromPort: 2, ToPort: -1, CIDRs: []string{"::/0"}}}, AllowNone, AllowAll},
		{"ICMPv6 from an IPv4 anywhere is not IPv6 anywhere", []Permission{{Protocol: "icmpv6", FromPort: -1, ToPort: -1, CIDRs: []string{"0.0.0.0/0"}}}, AllowNone, AllowSome},
		{"ICMP by number", []Permission{{Protocol: "1", FromPort: 3, ToPort: 4, CIDRs: []string{"0.0.0.0/0"}}}, AllowAll, AllowNone},
	} {
		if got := allowance(tt.rules, false); got != tt.v4 {
			t.Errorf("%s: frag-needed %s, want %s", tt.name, got, tt.v4)
		}
		if got := allowance(tt.rules, true); got != tt.v6 {
			t.Errorf("%s: packet-too-big %s, want %s", tt.name, got, tt.v6)
		}
	}
}

func TestAuditGroups(t *testing.T) {
	groups := []SecurityGroup{
		{ID: "sg-open", Name: "open", Ingress: []Permission{{Protocol: "-1", FromPort: -1, ToPort: -1, CIDRs: []string{"0.0.0.0/0", "::/0"}}}},
		{ID: "sg-web", Name: "web", Ingress: []Permission{{Protocol: "tcp", FromPort: 443, ToPort: 443, CIDRs: []string{"0.0.0.0/0"}}}},
	}
	// On Clipper no group can drop the messages: information, no fix,
	// and the exit status stays healthy.
	rep := &FirewallReport{Findings: []Finding{}}
	rep.AuditGroups(context.Background(), GroupSource{Endpoint: "http://ctl", Clipper: true,
		List: func(context.Context) ([]SecurityGroup, error) { return groups, nil }})
	if rep.GroupsRead != 2 || len(rep.Groups) != 1 || rep.Groups[0].GroupID != "sg-web" {
		t.Fatalf("read %d, findings %+v: want 2 read and sg-web listed", rep.GroupsRead, rep.Groups)
	}
	g := rep.Groups[0]
	if g.Problem() || !g.Covered || len(g.Fix) != 0 || !strings.Contains(g.Why, "no action") {
		t.Errorf("Clipper group finding %+v: want covered information, no fix", g)
	}
	if rep.ExitCode() != ExitHealthy {
		t.Errorf("exit %d with informational group findings, want 0", rep.ExitCode())
	}
	var b strings.Builder
	rep.WriteText(&b)
	if !strings.Contains(b.String(), "sg-web (web)") {
		t.Errorf("text report does not list the group:\n%s", b.String())
	}

	// Elsewhere the same group drops them: a problem, with the fix.
	rep = &FirewallReport{Findings: []Finding{}}
	rep.AuditGroups(context.Background(), GroupSource{Endpoint: "https://ec2.example",
		List: func(context.Context) ([]SecurityGroup, error) { return groups, nil }})
	g = rep.Groups[0]
	if !g.Problem() || len(g.Fix) != 2 || !strings.Contains(g.Fix[0].Command, "--group-id sg-web") {
		t.Errorf("EC2 group finding %+v: want a problem with two fixes", g)
	}
	if rep.ExitCode() != ExitProblem {
		t.Errorf("exit %d, want 2", rep.ExitCode())
	}

	// A controller that cannot be read is skipped, not fatal.
	rep = &FirewallReport{Findings: []Finding{}, Sources: []string{"host"}}
	rep.AuditGroups(context.Background(), GroupSource{Endpoint: "http://down",
		List: func(context.Context) ([]SecurityGroup, error) { return nil, errors.New("connection refused") }})
	if len(rep.Skipped) != 1 || len(rep.Sources) != 1 || rep.ExitCode() != ExitHealthy {
		t.Errorf("skipped %v sources %v exit %d: want the controller skipped", rep.Skipped, rep.Sources, rep.ExitCode())
	}
}
