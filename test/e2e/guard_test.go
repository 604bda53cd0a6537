package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/clipper-cloud/clipper/internal/testutil/netns"
	"github.com/clipper-cloud/clipper/internal/testutil/nftcheck"
)

// imdsProbe is user data that checks the metadata service from inside an
// instance: IMDSv1 is refused, a 20 MB upload crosses a path whose MTU
// shrinks behind the node (PMTU discovery needs the router's ICMP
// "fragmentation needed" to reach the instance, which no group allows), it
// reads its instance ID over IPv6 (with nothing but its link-local address
// and the route the node advertises), and then it reports whether the
// endpoint is open, each time that changes.
const imdsProbe = `#!/bin/sh
M=169.254.169.254
echo "IMDSV1 $(printf 'GET /latest/meta-data/instance-id HTTP/1.0\r\n\r\n' | nc -w 5 $M 80 | head -n 1 | tr -d '\r')"
up() { printf 'POST / HTTP/1.0\r\nContent-Length: 20971520\r\n\r\n'; dd if=/dev/zero bs=1M count=20 2>/dev/null; }
echo "XFER $(up | timeout 120 nc -w 30 198.51.100.2 9000 2>&1 | tail -n 1)"
for i in $(seq 20); do grep -q '^fd000ec2000000000000000000000000 40' /proc/net/ipv6_route && break; sleep 1; done
T6=$(printf 'PUT /latest/api/token HTTP/1.0\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n' | nc -w 3 fd00:ec2::254 80 | tr -d '\r' | sed '1,/^$/d')
echo "IMDS6 $(timeout 10 wget -q -O - --header "X-aws-ec2-metadata-token: $T6" 'http://[fd00:ec2::254]/latest/meta-data/instance-id')"
tok() { printf 'PUT /latest/api/token HTTP/1.0\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n' | nc -w 2 $M 80 2>/dev/null | head -n 1 | grep -q ' 200 '; }
(
	last=
	for i in $(seq 1 240); do
		if tok; then s=open; else s=closed; fi
		[ "$s" != "$last" ] && echo "IMDS-ENDPOINT $s" && last=$s
		sleep 1
	done
) &
`

// spoofProbe is user data that pings the gateway with its own addresses,
// with another IP, with another MAC, and with its own again; then it
// announces the other instance's address (@VICTIM@) by gratuitous ARP.
const spoofProbe = `#!/bin/sh
GW=$(ip route | awk '/^default/ { print $3; exit }')
IP=$(ip -4 addr show dev eth0 | awk '$1 == "inet" { print $2; exit }')
LEN=${IP#*/}
SPOOF=${GW%.*}.$(( ${GW##*.} + 200 ))
MAC=$(cat /sys/class/net/eth0/address)
p() { if ping -c 2 -W 2 $GW >/dev/null 2>&1; then echo "SPOOF-$1 pass"; else echo "SPOOF-$1 blocked"; fi; }
readdr() { ip addr flush dev eth0; ip addr add $1 dev eth0; ip route add default via $GW 2>/dev/null; ip neigh flush dev eth0; }
remac() { ip link set eth0 down; ip link set eth0 address $1; ip link set eth0 up; readdr $IP; }
p own
readdr $SPOOF/$LEN
p ip
readdr $IP
p ip-restored
remac 02:00:00:00:00:99
p mac
remac $MAC
p mac-restored
VICTIM=@VICTIM@
ip addr add $VICTIM/32 dev eth0
arping -U -c 3 -I eth0 -s $VICTIM $VICTIM >/dev/null 2>&1
echo "SPOOF-arp sent rc=$?"
ip addr del $VICTIM/32 dev eth0
`

// TestGuardrails checks what instances cannot break, with real VMs: IMDSv1
// is refused when tokens are required and a disabled endpoint is closed
// (and opens again), "fragmentation needed" reaches an instance whose groups
// allow no ICMP, and an instance that changes its IP or MAC can no longer
// send until it restores them.
func TestGuardrails(t *testing.T) {
	requireVMs(t)
	c := StartCloud(t, "--mtu", "1500")
	ctx := context.Background()
	ami := c.ImportGuest(t, "guest")

	// The node's uplink leads through a router whose route to the outside
	// has an MTU of 1400; nothing clamps MSS on the way.
	router, out := netns.New(t, "rtr"), netns.New(t, "out")
	netns.Link(t, c.NS, "up0", router, "eth0")
	netns.Link(t, router, "eth1", out, "eth0")
	c.NS.Addr("up0", "192.0.2.1/24")
	c.NS.IP("route", "add", "default", "via", "192.0.2.254")
	router.Addr("eth0", "192.0.2.254/24")
	router.Addr("eth1", "198.51.100.1/24")
	router.IP("route", "replace", "198.51.100.0/24", "dev", "eth1", "mtu", "1400")
	router.Forward()
	out.Addr("eth0", "198.51.100.2/24")
	out.IP("route", "add", "default", "via", "198.51.100.1")
	received := make(chan int64, 1)
	ln, err := out.Listen("tcp", ":9000")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		select {
		case received <- n:
		default:
		}
		fmt.Fprintf(w, "got %d", n)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	launch := func(userData string) types.Instance {
		t.Helper()
		out, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Micro,
			MinCount: aws.Int32(1), MaxCount: aws.Int32(1), UserData: aws.String(encode64(userData))})
		if err != nil {
			t.Fatal(err)
		}
		return out.Instances[0]
	}
	gi := launch(imdsProbe)
	g, gIP, gMAC := aws.ToString(gi.InstanceId), aws.ToString(gi.PrivateIpAddress), instanceMAC(gi)
	si := launch(strings.ReplaceAll(spoofProbe, "@VICTIM@", gIP))
	s, sMAC := aws.ToString(si.InstanceId), instanceMAC(si)

	con := c.WaitConsole(t, g, "XFER", 4*time.Minute)
	if !regexp.MustCompile(`IMDSV1 HTTP/1\.[01] 401 `).MatchString(con) {
		t.Errorf("IMDSv1 was not refused with 401 with tokens required:\n%s", con)
	}
	// The fixed first rules head every instance chain of the live rule
	// set (the transfer below passing cannot show it: the router's ICMP is
	// RELATED to a tracked connection).
	rs, err := c.NS.Output("nft", "-j", "list", "ruleset")
	if err != nil {
		t.Fatal(err)
	}
	if chains, err := nftcheck.FirstRules([]byte(rs), "clipper_filter"); err != nil || len(chains) != 4 {
		t.Errorf("instance chains %v: %v", chains, err)
	}
	if !strings.Contains(con, "XFER got 20971520") {
		t.Errorf("the 20 MB upload through the 1400-byte route did not complete:\n%s", con)
	}
	if con := c.WaitConsole(t, g, "IMDS6", time.Minute); !strings.Contains(con, "IMDS6 "+g) {
		t.Errorf("the guest did not read its instance ID from [fd00:ec2::254]:\n%s", con)
	}
	c.WaitConsole(t, g, "IMDS-ENDPOINT open", time.Minute)
	setEndpoint := func(state types.InstanceMetadataEndpointState) {
		t.Helper()
		if _, err := c.EC2.ModifyInstanceMetadataOptions(ctx, &ec2.ModifyInstanceMetadataOptionsInput{InstanceId: aws.String(g),
			HttpEndpoint: state}); err != nil {
			t.Fatal(err)
		}
	}
	setEndpoint(types.InstanceMetadataEndpointStateDisabled)
	c.WaitConsole(t, g, "IMDS-ENDPOINT closed", 30*time.Second)
	setEndpoint(types.InstanceMetadataEndpointStateEnabled)
	c.waitCount(t, g, "IMDS-ENDPOINT open", 2, 30*time.Second)

	spoof := c.WaitConsole(t, s, "SPOOF-mac-restored", 3*time.Minute)
	for _, want := range []string{"SPOOF-own pass", "SPOOF-ip blocked", "SPOOF-ip-restored pass", "SPOOF-mac blocked", "SPOOF-mac-restored pass"} {
		if !strings.Contains(spoof, want) {
			t.Errorf("want %q on the console:\n%s", want, spoof)
		}
	}
	// The node talked to g (metadata), so it has g's MAC for g's address;
	// s's gratuitous ARP for that address (which would override it) must
	// not have reached it.
	spoof = c.WaitConsole(t, s, "SPOOF-arp sent", time.Minute)
	if !strings.Contains(spoof, "SPOOF-arp sent rc=0") {
		t.Errorf("arping failed in the guest:\n%s", spoof)
	}
	time.Sleep(500 * time.Millisecond)
	neigh, err := c.NS.Output("ip", "neigh", "show", gIP)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(neigh, sMAC) || !strings.Contains(neigh, gMAC) {
		t.Errorf("the node's neighbour entry for %s (g %s, s %s) after s's gratuitous ARP: %q", gIP, gMAC, sMAC, neigh)
	}
}

// instanceMAC is the MAC of an instance's first interface.
func instanceMAC(i types.Instance) string {
	if len(i.NetworkInterfaces) == 0 {
		return ""
	}
	return strings.ToLower(aws.ToString(i.NetworkInterfaces[0].MacAddress))
}

// waitCount waits until an instance's console holds want at least n times.
func (c *Cloud) waitCount(t *testing.T, id, want string, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		con := c.WaitConsole(t, id, want, time.Until(deadline))
		if strings.Count(con, want) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %q seen fewer than %d times; console:\n%s", id, want, n, con)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
