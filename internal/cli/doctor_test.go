package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/clipper-cloud/clipper/internal/api"
	"github.com/clipper-cloud/clipper/internal/doctor"
	"github.com/clipper-cloud/clipper/internal/testutil/cloud"
)

// runCLI runs the command line in-process and returns its standard output
// and exit status.
func runCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(t.Context())
	var ee exitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &ee):
		return out.String(), ee.code
	}
	t.Fatalf("clipper %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	return "", 1
}

// `clipper doctor firewall` against a real controller: the account's
// security groups are read with DescribeSecurityGroups and judged. On
// Clipper a group that lets no frag-needed in is covered by the nodes'
// fixed rules (information, exit 0); behind an endpoint without Clipper's
// API the same group is a problem with its fix (exit 2).
func TestDoctorFirewallSecurityGroups(t *testing.T) {
	c := cloud.Start(t, cloud.Options{})
	ctx := context.Background()
	web, err := c.EC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("web"), Description: aws.String("https only")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.EC2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: web.GroupId,
		IpPermissions: []types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(443), ToPort: aws.Int32(443),
			IpRanges: []types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}}}}); err != nil {
		t.Fatal(err)
	}
	pmtud, err := c.EC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("pmtud"), Description: aws.String("lets the ICMP errors in")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.EC2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: pmtud.GroupId,
		IpPermissions: []types.IpPermission{
			{IpProtocol: aws.String("icmp"), FromPort: aws.Int32(3), ToPort: aws.Int32(4), IpRanges: []types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}},
			{IpProtocol: aws.String("icmpv6"), FromPort: aws.Int32(2), ToPort: aws.Int32(-1), Ipv6Ranges: []types.Ipv6Range{{CidrIpv6: aws.String("::/0")}}},
		}}); err != nil {
		t.Fatal(err)
	}
	all, err := c.EC2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{})
	if err != nil {
		t.Fatal(err)
	}
	key := c.Ctrl.Credentials()
	t.Setenv("AWS_ACCESS_KEY_ID", key.ID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", key.Secret)
	t.Setenv("AWS_ENDPOINT_URL", "")
	t.Setenv("AWS_ENDPOINT_URL_EC2", "")
	rules := filepath.Join("..", "doctor", "testdata", "clean.nft.json")

	audit := func(endpoint string) (*doctor.FirewallReport, int) {
		t.Helper()
		out, code := runCLI(t, "doctor", "firewall", "--json", "--nft-json", rules, "--endpoint-url", endpoint, "--region", c.Client.Region)
		var rep doctor.FirewallReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("bad JSON %v:\n%s", err, out)
		}
		return &rep, code
	}
	byID := func(rep *doctor.FirewallReport) map[string]doctor.GroupFinding {
		m := map[string]doctor.GroupFinding{}
		for _, g := range rep.Groups {
			m[g.GroupID] = g
		}
		return m
	}

	rep, code := audit(c.Ctrl.APIURL())
	if code != doctor.ExitHealthy || rep.GroupsRead != len(all.SecurityGroups) {
		t.Fatalf("exit %d, %d groups read (skipped %v): want 0 and %d", code, rep.GroupsRead, rep.Skipped, len(all.SecurityGroups))
	}
	found := byID(rep)
	if g, ok := found[*web.GroupId]; !ok || g.FragNeeded != doctor.AllowNone || g.Problem() || !g.Covered || len(g.Fix) != 0 {
		t.Errorf("web group: %+v, want frag-needed none, covered, information only", g)
	}
	if g, ok := found[*pmtud.GroupId]; ok {
		t.Errorf("the group that lets both messages in is listed: %+v", g)
	}
	for _, g := range all.SecurityGroups {
		if *g.GroupName == "default" {
			if f := found[*g.GroupId]; f.FragNeeded != doctor.AllowSome || f.Problem() {
				t.Errorf("default group %s: %+v, want frag-needed from some sources (its members), information only", *g.GroupId, f)
			}
		}
	}

	// The same controller behind an endpoint that speaks EC2 only.
	target, err := url.Parse(c.Ctrl.APIURL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, api.Prefix) {
			http.NotFound(w, r)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(plain.Close)
	rep, code = audit(plain.URL)
	if code != doctor.ExitProblem {
		t.Fatalf("exit %d behind a plain EC2 endpoint, want 2", code)
	}
	g := byID(rep)[*web.GroupId]
	if !g.Problem() || g.Covered || len(g.Fix) != 2 || !strings.Contains(g.Fix[0].Command, *web.GroupId) {
		t.Errorf("web group behind a plain EC2 endpoint: %+v, want a problem with the fixes", g)
	}

	// No controller named: the host's rules only, and why not.
	out, code := runCLI(t, "doctor", "firewall", "--nft-json", rules)
	if code != doctor.ExitHealthy || !strings.Contains(out, "skipped security groups: no endpoint") {
		t.Errorf("exit %d without a controller, want 0 and the reason:\n%s", code, out)
	}
}
