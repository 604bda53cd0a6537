package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/miekg/dns"

	"github.com/clipper-cloud/clipper/internal/testutil/netns"
)

// tokenShare is a's user data: it takes an IMDSv2 token and serves it on
// its web page, for b to try.
const tokenShare = `#!/bin/sh
printf 'PUT /latest/api/token HTTP/1.0\r\nX-aws-ec2-metadata-token-ttl-seconds: 600\r\n\r\n' |
	nc -w 3 169.254.169.254 80 | tr -d '\r' | sed '1,/^$/d' >/www/token
echo "TOKEN-SHARED $(wc -c </www/token)"
`

// peerProbe is b's user data: it probes a (%[1]s) from inside: its web
// page and port 22 through the default group's member rule, its private
// DNS name (%[2]s) and a name only the node's upstream knows (A queries
// only: busybox nslookup sends A and AAAA with one ID when the guest's
// clock has not moved between them, and then takes whichever answer comes
// first for the A query), and a's
// metadata token used as b's own; then it reports, each time that changes,
// whether a's web page answers (for the egress rules).
const peerProbe = `#!/bin/sh
M=169.254.169.254
A=%[1]s
echo PROBE80 $(wget -q -O - http://$A/)
echo PROBE22 $(nc -w 3 $A 22 </dev/null)
echo "DNS-PRIVATE $(nslookup -type=a %[2]s 2>&1 | tr '\n\t' '  ')"
echo "DNS-UPSTREAM $(nslookup -type=a upstream.example.test 2>&1 | tr '\n\t' '  ')"
for i in $(seq 60); do wget -q -O /tmp/atok http://$A/token && [ -s /tmp/atok ] && break; sleep 1; done
get() { printf 'GET /latest/meta-data/instance-id HTTP/1.0\r\nX-aws-ec2-metadata-token: %%s\r\n\r\n' "$1" | nc -w 3 $M 80 | tr -d '\r'; }
echo "STOLEN-TOKEN $(get "$(cat /tmp/atok)" | head -n 1)"
(
	last=
	while :; do
		if timeout 3 wget -q -O /dev/null http://$A/; then s=open; else s=closed; fi
		[ "$s" != "$last" ] && echo "EGRESS $s" && last=$s
		sleep 1
	done
) &
`

// TestInstanceNetworking boots two real VMs in one security group and checks
// what the guests see (a DHCP address with the network's MTU, IMDSv2, user
// data, the node's DNS) and what the node enforces (members reach each
// other; from outside, port 80 opens and closes with the group's rules and
// with the instance's groups while they run, 22 stays closed; egress rules;
// one instance's metadata token is worthless to another).
func TestInstanceNetworking(t *testing.T) {
	requireVMs(t)
	const mtu = 1400
	// The node's DNS forwards to a fake resolver on the namespace's
	// loopback: no query leaves the machine.
	c := StartCloud(t, "--mtu", fmt.Sprint(mtu), "--dns-upstream", "127.0.0.1:5353")
	serveUpstreamDNS(t, c.NS, "127.0.0.1:5353")
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
	a := launch(tokenShare)
	aID, aIP := aws.ToString(a.InstanceId), aws.ToString(a.PrivateIpAddress)
	aName := aws.ToString(a.PrivateDnsName)
	if aIP == "" || aName == "" {
		t.Fatalf("RunInstances gave %s no private address or name: %q %q", aID, aIP, aName)
	}
	// b probes a from inside, through the default group's member rule.
	b := launch(fmt.Sprintf(peerProbe, aIP, aName))
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
	con := c.WaitConsole(t, bID, "CLIPPER-USERDATA-END", 2*time.Minute)
	if !strings.Contains(con, "PROBE80 clipper-guest") || !strings.Contains(con, "PROBE22 SSH-2.0-clipper-guest") {
		t.Errorf("members of one group do not reach each other; b's console:\n%s", con)
	}
	checkDNS(t, consoleLine(con, "DNS-PRIVATE"), aName, aIP)
	checkDNS(t, consoleLine(con, "DNS-UPSTREAM"), "upstream.example.test", upstreamAnswer)
	// a's token, sent by b, is refused: tokens are bound to the instance
	// whose port they were taken on.
	if line := consoleLine(con, "STOLEN-TOKEN"); !strings.Contains(line, " 401 ") {
		t.Errorf("b read metadata with a's token: %q", line)
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

	t.Run("ModifyInstanceAttribute groups while it runs", func(t *testing.T) {
		open80, err := c.EC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("open80"),
			Description: aws.String("port 80 from anywhere")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.EC2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{
			GroupId: open80.GroupId, IpPermissions: perm}); err != nil {
			t.Fatal(err)
		}
		setGroups := func(ids ...string) {
			t.Helper()
			if _, err := c.EC2.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: a.InstanceId,
				Groups: ids}); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		setGroups(groups[0], aws.ToString(open80.GroupId))
		t.Logf("port 80 opened %v after ModifyInstanceAttribute", waitReach(t, outside, aIP, 80, true, start))
		if reach(outside, bIP, 80) {
			t.Error("b's port 80 opened with a's groups")
		}
		start = time.Now()
		setGroups(groups...)
		t.Logf("port 80 closed %v after ModifyInstanceAttribute", waitReach(t, outside, aIP, 80, false, start))
	})

	t.Run("egress rules", func(t *testing.T) {
		// Both groups allow all egress (AWS's default); b reaches a until
		// neither does, and again once one allows port 80 to a.
		all := []types.IpPermission{{IpProtocol: aws.String("-1"), IpRanges: []types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}}}
		c.waitCount(t, bID, "EGRESS open", 1, time.Minute)
		for _, g := range groups {
			if _, err := c.EC2.RevokeSecurityGroupEgress(ctx, &ec2.RevokeSecurityGroupEgressInput{GroupId: aws.String(g),
				IpPermissions: all}); err != nil {
				t.Fatal(err)
			}
		}
		c.waitCount(t, bID, "EGRESS closed", 1, 30*time.Second)
		to80 := []types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(80), ToPort: aws.Int32(80),
			IpRanges: []types.IpRange{{CidrIp: aws.String(aIP + "/32")}}}}
		if _, err := c.EC2.AuthorizeSecurityGroupEgress(ctx, &ec2.AuthorizeSecurityGroupEgressInput{GroupId: web.GroupId,
			IpPermissions: to80}); err != nil {
			t.Fatal(err)
		}
		c.waitCount(t, bID, "EGRESS open", 2, 30*time.Second)
	})
}

// upstreamAnswer is what the fake upstream resolver answers to any A query.
const upstreamAnswer = "203.0.113.7"

// serveUpstreamDNS runs a resolver in ns on addr (UDP and TCP) standing in
// for the node's upstream: every A query gets upstreamAnswer.
func serveUpstreamDNS(t *testing.T, ns *netns.NS, addr string) {
	t.Helper()
	var pc net.PacketConn
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		if pc, err = net.ListenPacket("udp4", addr); err != nil {
			return err
		}
		ln, err = net.Listen("tcp4", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if q := r.Question[0]; q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5},
				A: net.ParseIP(upstreamAnswer)})
		}
		_ = w.WriteMsg(m)
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		go func() { _ = srv.ActivateAndServe() }()
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
}

// consoleLine returns the console line that starts with prefix ("" if none).
func consoleLine(con, prefix string) string {
	for _, l := range strings.Split(con, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), prefix) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// checkDNS checks busybox nslookup's output (on one line) for name -> ip.
func checkDNS(t *testing.T, line, name, ip string) {
	t.Helper()
	re := regexp.MustCompile(`Name:\s+` + regexp.QuoteMeta(name) + `\s+Address:\s+` + regexp.QuoteMeta(ip) + `(\s|$)`)
	if !re.MatchString(line) {
		t.Errorf("the guest did not resolve %s to %s: %q", name, ip, line)
	}
}

// reach reports whether a TCP connection to ip:port from the node's
// namespace is accepted.
func reach(c *Cloud, ip string, port int) bool { return reachWithin(c, ip, port, time.Second) }

// reachWithin is reach with a given connect timeout.
func reachWithin(c *Cloud, ip string, port int, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
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
		// Short connects, so the time is the rule's and not a dropped
		// SYN's retransmission timeout; a short one that fails is
		// confirmed with a patient one before it counts as closed.
		if reachWithin(c, ip, port, 250*time.Millisecond) == want {
			at := time.Since(start)
			if want || !reach(c, ip, port) {
				return at
			}
		}
		time.Sleep(50 * time.Millisecond)
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
