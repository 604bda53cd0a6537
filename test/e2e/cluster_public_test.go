package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// The cluster's public side: the pool elastic IPs and forwards come from,
// and the router's address on the nodes' segment (the Internet's client).
const (
	publicPool = "198.51.100.0/25"
	publicGW   = "198.51.100.254"
)

// who asks addr (host[:port]) for /cgi-bin/who from the router, on a new
// connection: "clipper-guest <instance> from <client>".
func (c *cluster) who(addr string, timeout time.Duration) (string, error) {
	hc := &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: c.router.DialContext, DisableKeepAlives: true}}
	resp, err := hc.Get("http://" + addr + "/cgi-bin/who")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, b)
	}
	return strings.TrimSpace(string(b)), nil
}

// waitWho waits until addr answers the router with want.
func (c *cluster) waitWho(t testing.TB, addr, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var got string
	var err error
	for time.Now().Before(deadline) {
		if got, err = c.who(addr, time.Second); err == nil && got == want {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("from the router, %s answered %q (%v) for %s, want %q", addr, got, err, within, want)
}

// waitNoAnswer waits until addr stops answering the router.
func (c *cluster) waitNoAnswer(t *testing.T, addr string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var got string
	for time.Now().Before(deadline) {
		var err error
		if got, err = c.who(addr, time.Second); err != nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("from the router, %s still answers %q after %s", addr, got, within)
}

// neighMAC is the router's neighbour entry for ip on the lan segment.
func (c *cluster) neighMAC(ip string) string {
	out, _ := c.router.Output("ip", "neigh", "show", ip, "dev", "lan")
	f := strings.Fields(out)
	for i := range f {
		if f[i] == "lladdr" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

// mac is the address of a node's uplink.
func (n *clusterNode) mac(t testing.TB) string {
	t.Helper()
	out := n.ns.Run("cat", "/sys/class/net/eth0/address")
	return strings.TrimSpace(out)
}

// allowFromInternet opens tcp 80 of a group to the router's address.
func (c *cluster) allowFromInternet(t testing.TB, group string) {
	t.Helper()
	_, err := c.EC2.AuthorizeSecurityGroupIngress(context.Background(), &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(group),
		IpPermissions: []types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(80), ToPort: aws.Int32(80),
			IpRanges: []types.IpRange{{CidrIp: aws.String(publicGW + "/32")}}}}})
	if err != nil {
		t.Fatal(err)
	}
}

// checkElasticIP gives an elastic IP to b (node 2) and reaches it from
// the router, which b sees as the client (no masquerade); then moves it to
// a (node 1) with AssociateAddress --allow-reassociation: node 1 announces
// it with a gratuitous ARP (the router's neighbour entry changes before
// any traffic asks), and the router reaches a through it.
func (c *cluster) checkElasticIP(t *testing.T, a, b types.Instance) string {
	t.Helper()
	ctx := context.Background()
	aID, bID := aws.ToString(a.InstanceId), aws.ToString(b.InstanceId)
	alloc, err := c.EC2.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: types.DomainTypeVpc, Address: aws.String("198.51.100.10")})
	if err != nil {
		t.Fatal(err)
	}
	eip := aws.ToString(alloc.PublicIp)
	if _, err := c.EC2.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: alloc.AllocationId, InstanceId: b.InstanceId}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.waitWho(t, eip, "clipper-guest "+bID+" from "+publicGW, time.Minute)
	t.Logf("elastic IP %s reaches %s on node2 %v after AssociateAddress, with the client's own address", eip, bID, time.Since(start).Round(10*time.Millisecond))
	if mac, want := c.neighMAC(eip), c.nodes["node2"].mac(t); mac != want {
		t.Errorf("the router reaches %s at %q, want node2's %s", eip, mac, want)
	}
	desc, err := c.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{bID}})
	if err != nil || aws.ToString(desc.Reservations[0].Instances[0].PublicIpAddress) != eip {
		t.Errorf("describe-instances: public address of %s: %v", bID, err)
	}

	// The move: no traffic until the router's entry shows node 1.
	if _, err := c.EC2.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: alloc.AllocationId, InstanceId: a.InstanceId,
		AllowReassociation: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	want := c.nodes["node1"].mac(t)
	for time.Since(start) < 15*time.Second && c.neighMAC(eip) != want {
		time.Sleep(50 * time.Millisecond)
	}
	if mac := c.neighMAC(eip); mac != want {
		t.Errorf("after the move the router reaches %s at %q, want node1's %s (no gratuitous ARP?)", eip, mac, want)
	} else {
		t.Logf("node1's gratuitous ARP for %s reached the router %v after AssociateAddress", eip, time.Since(start).Round(10*time.Millisecond))
	}
	c.waitWho(t, eip, "clipper-guest "+aID+" from "+publicGW, 30*time.Second)
	t.Logf("elastic IP %s reaches %s on node1 %v after the move", eip, aID, time.Since(start).Round(10*time.Millisecond))
	return aws.ToString(alloc.AllocationId)
}

// checkForward forwards a public address's port to b's web server with
// `clipper forward create`, lists it, reaches b through it from the
// router, deletes it and sees the traffic stop.
func (c *cluster) checkForward(t *testing.T, b types.Instance) {
	t.Helper()
	bID, bIP := aws.ToString(b.InstanceId), aws.ToString(b.PrivateIpAddress)
	const listen = "198.51.100.20:8080"
	id := c.Run(t, clipperBin, "forward", "create", "--listen", listen, "--to", bIP+":80")
	if !strings.HasPrefix(id, "fwd-") {
		t.Fatalf("forward create printed %q", id)
	}
	for _, verb := range []string{"ls", "list"} {
		ls := c.Run(t, clipperBin, "forward", verb)
		if !strings.Contains(ls, id) || !strings.Contains(ls, listen) || !strings.Contains(ls, bIP+":80") {
			t.Errorf("forward %s does not show %s %s -> %s:\n%s", verb, id, listen, bIP, ls)
		}
	}
	// The forward masquerades: b sees node 2, not the router.
	start := time.Now()
	c.waitWhoPrefix(t, listen, "clipper-guest "+bID+" from ", 30*time.Second)
	t.Logf("forward %s reaches %s %v after create", listen, bID, time.Since(start).Round(10*time.Millisecond))
	if out, err := c.Output(t, clipperBin, "forward", "create", "--listen", listen, "--to", bIP+":80"); err == nil {
		t.Errorf("a second forward of %s was created: %s", listen, out)
	}
	c.Run(t, clipperBin, "forward", "rm", id)
	c.waitNoAnswer(t, listen, 15*time.Second)
	if ls := c.Run(t, clipperBin, "forward", "ls"); strings.Contains(ls, id) {
		t.Errorf("forward ls after rm:\n%s", ls)
	}
}

// waitWhoPrefix waits until addr answers the router with a line that
// starts with prefix.
func (c *cluster) waitWhoPrefix(t *testing.T, addr, prefix string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var got string
	var err error
	for time.Now().Before(deadline) {
		if got, err = c.who(addr, time.Second); err == nil && strings.HasPrefix(got, prefix) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("from the router, %s answered %q (%v) for %s, want %q...", addr, got, err, within, prefix)
}

// nodeCmd runs `clipper node` once in a node's namespace with a time
// limit, and returns its combined output and its error (an
// *exec.ExitError for a non-zero status).
func (n *clusterNode) nodeCmd(t *testing.T, c *cluster, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	argv := append([]string{clipperBin, "node", "--controller", "https://10.0.1.1:8774", "--zone", n.zone, "--address", n.addr}, args...)
	out, err := n.ns.Command(ctx, argv...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("clipper node %s did not end within a minute:\n%s", strings.Join(args, " "), out)
	}
	return string(out), err
}

// checkJoinRefusals runs the real binary as a node that must not get in:
// a wrong token, a revoked token, and the name of a node of the cloud.
func (c *cluster) checkJoinRefusals(t *testing.T) {
	t.Helper()
	n1 := c.nodes["node1"]
	good := strings.TrimSpace(readFile(t, filepath.Join(c.Dir, "join-token")))
	f := strings.Split(good, ".")
	f[2] = strings.Repeat("0", len(f[2]))
	out, err := n1.nodeCmd(t, c, "--token", strings.Join(f, "."), "--name", "node9", "--data-dir", t.TempDir())
	if exitCode(err) <= 0 || !strings.Contains(out, "join token rejected: unknown token or wrong secret") {
		t.Errorf("a wrong token: exit %d, output:\n%s", exitCode(err), out)
	}

	tok := c.Run(t, clipperBin, "token", "create", "--ttl", "1h")
	tokID := strings.Split(tok, ".")[1]
	if ls := c.Run(t, clipperBin, "token", "ls"); !strings.Contains(ls, tokID) || !strings.Contains(ls, "join-token") {
		t.Errorf("token ls does not show %s and the join-token file's token:\n%s", tokID, ls)
	}
	c.Run(t, clipperBin, "token", "rm", tokID)
	if ls := c.Run(t, clipperBin, "token", "ls"); strings.Contains(ls, tokID) {
		t.Errorf("token ls after rm:\n%s", ls)
	}
	out, err = n1.nodeCmd(t, c, "--token", tok, "--name", "node9", "--data-dir", t.TempDir())
	if exitCode(err) <= 0 || !strings.Contains(out, "join token rejected") {
		t.Errorf("a revoked token: exit %d, output:\n%s", exitCode(err), out)
	}

	out, err = n1.nodeCmd(t, c, "--token", good, "--name", "node1", "--data-dir", t.TempDir())
	if exitCode(err) <= 0 || !strings.Contains(out, "node name in use") || !strings.Contains(out, "clipper node rm node1") {
		t.Errorf("joining under node1's name: exit %d, output:\n%s", exitCode(err), out)
	}
}

// checkRemoveNode removes node 2 with `clipper node rm`: its running agent
// stops with "certificate revoked" and a non-zero status, a restart with
// its certificate is refused the same way, and the node is gone from
// `clipper node ls`.
func (c *cluster) checkRemoveNode(t *testing.T) {
	t.Helper()
	n2 := c.nodes["node2"]
	out := c.Run(t, clipperBin, "node", "rm", "node2")
	if !strings.Contains(out, "node node2 removed") {
		t.Errorf("node rm printed %q", out)
	}
	exited := make(chan error, 1)
	go func() { exited <- n2.proc.Wait() }()
	select {
	case err := <-exited:
		if exitCode(err) <= 0 || !strings.Contains(n2.proc.Stderr(), "certificate revoked") {
			t.Errorf("node2's agent after node rm: exit %d, stderr:\n%s", exitCode(err), tail(n2.proc.Stderr(), 2000))
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("node2's agent still runs 30 s after node rm; stderr:\n%s", tail(n2.proc.Stderr(), 2000))
	}
	out, err := n2.nodeCmd(t, c, "--token-file", filepath.Join(c.Dir, "join-token"), "--name", "node2", "--data-dir", n2.dir)
	if exitCode(err) <= 0 || !strings.Contains(out, "certificate revoked") {
		t.Errorf("node2 restarted with its revoked certificate: exit %d, output:\n%s", exitCode(err), tail(out, 2000))
	}
	if _, listed := c.nodeStates(t)["node2"]; listed {
		t.Errorf("node ls still lists node2 after node rm")
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// hasLink reports whether a device exists in a node's namespace.
func (n *clusterNode) hasLink(dev string) bool {
	_, err := n.ns.Output("ip", "link", "show", "dev", dev)
	return err == nil
}

// processOf reports whether pid is a QEMU process of instance id.
func processOf(pid int, id string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(b), id)
}
