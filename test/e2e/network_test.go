package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/clipper-cloud/clipper/internal/testutil/netns"
)

// TestInstanceNetworking boots two real VMs in one security group and checks
// what the guests see (a DHCP address with the network's MTU, IMDSv2, user
// data) and what the node enforces (members reach each other; from outside,
// port 80 opens and closes with the group's rules while they run, 22 stays
// closed).
func TestInstanceNetworking(t *testing.T) {
	requireVMs(t)
	const mtu = 1400
	c := StartCloud(t, "--mtu", fmt.Sprint(mtu))
	ctx := context.Background()
	ami := c.ImportGuest(t, "guest")

	web, err := c.EC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("web"),
		Description: aws.String("web servers")})
	if err != nil {
		t.Fatal(err)
	}
	def, err := c.EC2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupNames: []string{"default"}})
	if err != nil || len(def.SecurityGroups) != 1 {
		t.Fatalf("default group: %v %v", def, err)
	}
	groups := []string{aws.ToString(def.SecurityGroups[0].GroupId), aws.ToString(web.GroupId)}

	launch := func(userData string) types.Instance {
		t.Helper()
		in := &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Micro,
			MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SecurityGroupIds: groups}
		if userData != "" {
			in.UserData = aws.String(encode64(userData))
		}
		out, err := c.EC2.RunInstances(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		return out.Instances[0]
	}
	a := launch("")
	aID, aIP := aws.ToString(a.InstanceId), aws.ToString(a.PrivateIpAddress)
	if aIP == "" {
		t.Fatalf("RunInstances gave %s no private address", aID)
	}
	// b probes a from inside, through the default group's member rule.
	b := launch(fmt.Sprintf("#!/bin/sh\necho PROBE80 $(wget -q -O - http://%s/)\necho PROBE22 $(nc -w 3 %s 22 </dev/null)\n", aIP, aIP))
	bID, bIP := aws.ToString(b.InstanceId), aws.ToString(b.PrivateIpAddress)

	for _, in := range []struct{ id, ip string }{{aID, aIP}, {bID, bIP}} {
		con := c.WaitConsole(t, in.id, "CLIPPER-INSTANCE-ID", 3*time.Minute)
		if !strings.Contains(con, "CLIPPER-NET ip="+in.ip+"/") || !strings.Contains(con, fmt.Sprintf("mtu=%d", mtu)) {
			t.Errorf("%s: want DHCP address %s with mtu %d on the console:\n%s", in.id, in.ip, mtu, con)
		}
		if !strings.Contains(con, "CLIPPER-INSTANCE-ID "+in.id) {
			t.Errorf("%s: the metadata service gave another instance ID:\n%s", in.id, con)
		}
	}
	con := c.WaitConsole(t, bID, "CLIPPER-USERDATA-END", time.Minute)
	if !strings.Contains(con, "PROBE80 clipper-guest") || !strings.Contains(con, "PROBE22 SSH-2.0-clipper-guest") {
		t.Errorf("members of one group do not reach each other; b's console:\n%s", con)
	}

	// A client outside, routed to the instances through the node, and the
	// node itself: nothing answers before a rule allows it.
	out := netns.New(t, "out")
	netns.Link(t, c.NS, "up0", out, "eth0")
	c.NS.Addr("up0", "192.0.2.1/24")
	out.Addr("eth0", "192.0.2.2/24")
	out.IP("route", "add", "default", "via", "192.0.2.1")
	outside := &Cloud{NS: out}
	for _, from := range []*Cloud{outside, c} {
		if reach(from, aIP, 80) || reach(from, aIP, 22) {
			t.Fatalf("%s: an instance answers before any rule allows it", from.NS.Name)
		}
	}
	perm := []types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(80), ToPort: aws.Int32(80),
		IpRanges: []types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}}}
	start := time.Now()
	if _, err := c.EC2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{
		GroupId: web.GroupId, IpPermissions: perm}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := c.NS.Output("nft", "list", "ruleset")
			routes, _ := c.NS.Output("ip", "route")
			t.Logf("the node's nft rule set:\n%s\nroutes:\n%s", out, routes)
		}
	})
	took := waitReach(t, outside, aIP, 80, true, start)
	t.Logf("port 80 opened %v after AuthorizeSecurityGroupIngress", took)
	if body := httpGet(t, outside, aIP); !strings.Contains(body, "clipper-guest "+aID) {
		t.Errorf("GET http://%s/ = %q", aIP, body)
	}
	if !reach(outside, bIP, 80) || !reach(c, aIP, 80) {
		t.Error("the rule did not open port 80 of every member from everywhere")
	}
	if reach(outside, aIP, 22) || reach(c, aIP, 22) {
		t.Error("port 22 opened with a rule for port 80")
	}
	start = time.Now()
	if _, err := c.EC2.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{
		GroupId: web.GroupId, IpPermissions: perm}); err != nil {
		t.Fatal(err)
	}
	took = waitReach(t, outside, aIP, 80, false, start)
	t.Logf("port 80 closed %v after RevokeSecurityGroupIngress", took)
}

// reach reports whether a TCP connection to ip:port from the node's
// namespace is accepted.
func reach(c *Cloud, ip string, port int) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	conn, err := c.NS.DialContext(ctx, "tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// waitReach waits until reach(ip, port) is want and returns how long after
// start it happened. A rule change must take effect within seconds.
func waitReach(t *testing.T, c *Cloud, ip string, port int, want bool, start time.Time) time.Duration {
	t.Helper()
	for time.Since(start) < 10*time.Second {
		if reach(c, ip, port) == want {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("from %s: %s:%d reachable=%v 10 s after the rule changed", c.NS.Name, ip, port, !want)
	t.FailNow()
	return 0
}

func httpGet(t *testing.T, c *Cloud, ip string) string {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: c.NS.DialContext}}
	resp, err := hc.Get("http://" + ip + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
