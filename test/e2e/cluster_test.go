package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/clipper-cloud/clipper/internal/network"
	"github.com/clipper-cloud/clipper/internal/testutil/netns"
)

// cluster is a controller and two nodes, each a "host" of its own (a
// namespace), on a LAN played by a router namespace:
//
//	ctrl  eth0 10.0.1.1 --- r-c  10.0.1.254          \
//	node1 eth0 10.0.2.1 --- r-n1 \  bridge lan:        router
//	node2 eth0 10.0.3.1 --- r-n2 /  10.0.2.254/24,    (the LAN and
//	                                10.0.3.254/24,     the Internet)
//	                                198.51.100.254/24
//
// The nodes share one segment (the bridge lan), as machines on one switch
// do, so whichever node holds a public address (the pool 198.51.100.0/25)
// answers ARP for it there. Every link has MTU 1500; instance networks get
// 1450 (VXLAN). Each node is an availability zone of its own, so instances
// of one network on the two nodes are in two subnets: the nodes route
// between them over the overlay.
type cluster struct {
	*Cloud
	router *netns.NS
	nodes  map[string]*clusterNode
	scheme string // of the node protocol: http, or https with join tokens
}

type clusterNode struct {
	name, addr, dir string
	zone            string
	ns              *netns.NS
	proc            *netns.Proc
}

// startCluster starts the cluster; zones, when given, are the nodes'
// availability zones (default: one of its own each).
func startCluster(t testing.TB, zones ...string) *cluster {
	t.Helper()
	if len(zones) == 0 {
		zones = []string{"clipper-1a", "clipper-1b"}
	}
	ctrl := netns.New(t, "ctl")
	c := &cluster{Cloud: &Cloud{NS: ctrl, Dir: t.TempDir(), procs: map[string]*netns.Proc{}},
		router: netns.New(t, "lan"), nodes: map[string]*clusterNode{}, scheme: "http"}
	c.router.Forward()
	// The router routes between the subnets of the lan segment: it must not
	// tell the nodes to talk directly instead.
	c.router.Sysctl("net.ipv4.conf.all.send_redirects", "0")
	c.router.IP("link", "add", "lan", "type", "bridge")
	c.router.IP("link", "set", "lan", "up")
	c.router.Sysctl("net.ipv4.conf.lan.send_redirects", "0")
	c.router.Addr("lan", publicGW+"/24")
	join := func(ns *netns.NS, rdev, addr string, onLAN bool) {
		gw := addr[:strings.LastIndex(addr, ".")] + ".254"
		netns.Link(t, c.router, rdev, ns, "eth0")
		if onLAN {
			c.router.IP("link", "set", rdev, "master", "lan")
			c.router.Addr("lan", gw+"/24")
		} else {
			c.router.Addr(rdev, gw+"/24")
		}
		ns.Addr("eth0", addr+"/24")
		ns.IP("route", "add", "default", "via", gw)
	}
	join(ctrl, "r-c", "10.0.1.1", false)

	help, _ := cmdOutput(clipperBin, "node", "--help")
	if strings.Contains(help, "https://") {
		c.scheme = "https"
	}
	args := []string{"controller", "--data-dir", c.Dir, "--listen", "10.0.1.1:8773", "--node-listen", "10.0.1.1:8774",
		"--zones", "clipper-1a,clipper-1b", "--public-pool", publicPool}
	if chelp, _ := cmdOutput(clipperBin, "controller", "--help"); strings.Contains(chelp, "--node-san") {
		args = append(args, "--node-san", "10.0.1.1")
	}
	c.Start(t, "controller", args...)
	c.waitEnv(t)
	for i, name := range []string{"node1", "node2"} {
		n := &clusterNode{name: name, addr: fmt.Sprintf("10.0.%d.1", i+2), dir: filepath.Join(c.Dir, name),
			zone: zones[i], ns: netns.New(t, name)}
		join(n.ns, "r-n"+strconv.Itoa(i+1), n.addr, true)
		c.nodes[name] = n
		c.startNode(t, n)
	}
	c.waitNodes(t, map[string]string{"node1": "ready", "node2": "ready"}, 30*time.Second)
	return c
}

func cmdOutput(argv ...string) (string, error) {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	return string(out), err
}

// startNode runs (or runs again) a node's agent.
func (c *cluster) startNode(t testing.TB, n *clusterNode) {
	t.Helper()
	token := filepath.Join(c.Dir, "join-token")
	if _, err := os.Stat(token); err != nil {
		token = filepath.Join(c.Dir, "node-token")
	}
	n.proc = n.ns.Start(clipperBin, "node", "--controller", c.scheme+"://10.0.1.1:8774", "--token-file", token,
		"--data-dir", n.dir, "--name", n.name, "--zone", n.zone, "--address", n.addr)
	t.Cleanup(func() { c.killVMs(t) })
}

// nodeStates reads `clipper node ls`: name -> state.
func (c *cluster) nodeStates(t testing.TB) map[string]string {
	t.Helper()
	out, err := c.Output(t, clipperBin, "node", "ls")
	states := map[string]string{}
	if err != nil {
		return states
	}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 2 {
			states[f[0]] = f[1]
		}
	}
	return states
}

// waitNodes waits until each named node is in its state.
func (c *cluster) waitNodes(t testing.TB, want map[string]string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var got map[string]string
	for time.Since(start) < within {
		got = c.nodeStates(t)
		ok := true
		for name, st := range want {
			ok = ok && got[name] == st
		}
		if ok {
			return time.Since(start)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("nodes %v after %s, want %v", got, within, want)
	return 0
}

// launchOn starts an instance on one node (in the node's zone).
func (c *cluster) launchOn(t testing.TB, node string, in *ec2.RunInstancesInput) types.Instance {
	t.Helper()
	in.Placement = &types.Placement{AvailabilityZone: aws.String(c.nodes[node].zone)}
	out, err := c.EC2.RunInstances(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return out.Instances[0]
}

// vmPID is the QEMU process of an instance on a node, 0 if none.
func (n *clusterNode) vmPID(id string) int {
	b, err := os.ReadFile(filepath.Join(n.dir, "vms", id, "qemu.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

var probeLine = regexp.MustCompile(`PROBE (\d+) \[([^\]]*)\]`)

// waitProbe waits until a probe numbered after `after` on the console of
// the prober says the target answered (ok) or did not (!ok); it returns
// that probe's number.
func (c *cluster) waitProbe(t *testing.T, prober string, after int, ok bool, within time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		out, err := c.EC2.GetConsoleOutput(context.Background(), &ec2.GetConsoleOutputInput{InstanceId: aws.String(prober)})
		if err == nil {
			last = decode64(aws.ToString(out.Output))
			for _, m := range probeLine.FindAllStringSubmatch(last, -1) {
				n, _ := strconv.Atoi(m[1])
				if n > after && strings.HasPrefix(m[2], "clipper-guest") == ok {
					return n
				}
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("%s: no probe after #%d with answered=%v within %s; console:\n%s", prober, after, ok, within, tail(last, 1500))
	return 0
}

// lastProbe is the number of the latest probe on the console.
func (c *cluster) lastProbe(t *testing.T, prober string) int {
	t.Helper()
	out, err := c.EC2.GetConsoleOutput(context.Background(), &ec2.GetConsoleOutputInput{InstanceId: aws.String(prober)})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range probeLine.FindAllStringSubmatch(decode64(aws.ToString(out.Output)), -1) {
		n, _ = strconv.Atoi(m[1])
	}
	return n
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// systemStatus is an instance's system status in DescribeInstanceStatus.
func (c *cluster) systemStatus(t *testing.T, id string) string {
	t.Helper()
	out, err := c.EC2.DescribeInstanceStatus(context.Background(), &ec2.DescribeInstanceStatusInput{InstanceIds: []string{id}})
	if err != nil || len(out.InstanceStatuses) != 1 || out.InstanceStatuses[0].SystemStatus == nil {
		return ""
	}
	return string(out.InstanceStatuses[0].SystemStatus.Status)
}

// TestClusterOverlay runs a controller and two nodes as separate hosts and
// checks issue 4 end to end with real VMs: an instance on node 1 reaches
// one on node 2 in the same network (the default VPC, a subnet per zone)
// over VXLAN; a security group rule on the second blocks and opens that
// traffic; an elastic IP reaches node 2's instance from the router (the
// Internet) with the client's own address, and keeps working moved to
// node 1's; a port forward reaches its target until it is deleted; wrong
// and revoked tokens and a name in use are refused; node 2 losing its agent
// and its link is down within 10 s and its instance impaired; an instance
// terminated meanwhile is cleaned when node 2 returns, the other kept
// without loss or duplicate; `clipper node rm` stops node 2's agent with
// "certificate revoked" and refuses it afterwards.
func TestClusterOverlay(t *testing.T) {
	requireVMs(t)
	c := startCluster(t)
	ctx := context.Background()
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.nodes {
				rs, _ := n.ns.Output("nft", "list", "ruleset")
				fdb, _ := n.ns.Output("bridge", "fdb", "show")
				links, _ := n.ns.Output("ip", "-d", "link")
				t.Logf("%s: links:\n%s\nfdb:\n%s\nruleset:\n%s\nagent log:\n%s", n.name, links, fdb, rs, tail(n.proc.Stderr(), 4000))
			}
		}
	})
	ami := c.ImportGuest(t, "guest")

	mkGroup := func(name string) string {
		g, err := c.EC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(name), Description: aws.String(name)})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(g.GroupId)
	}
	web, client := mkGroup("web"), mkGroup("client")

	b := c.launchOn(t, "node2", &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Micro,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SecurityGroupIds: []string{web}})
	bID, bIP := aws.ToString(b.InstanceId), aws.ToString(b.PrivateIpAddress)
	// d is terminated while node 2 is away.
	d := c.launchOn(t, "node2", &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Nano,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	dID := aws.ToString(d.InstanceId)
	// a asks b's web server every second, for ever.
	probe := fmt.Sprintf("#!/bin/sh\nn=0\nwhile :; do n=$((n+1)); r=$(timeout 2 wget -q -O - http://%s/ 2>/dev/null | head -c 40); echo \"PROBE $n [$r]\"; sleep 1; done\n", bIP)
	a := c.launchOn(t, "node1", &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Micro,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SecurityGroupIds: []string{client}, UserData: aws.String(encode64(probe))})
	aID := aws.ToString(a.InstanceId)
	if aws.ToString(a.SubnetId) == aws.ToString(b.SubnetId) {
		t.Errorf("%s and %s share subnet %s: want one per zone", aID, bID, aws.ToString(a.SubnetId))
	}
	t.Logf("a %s (%s) on node1, b %s (%s) and d %s on node2", aID, aws.ToString(a.PrivateIpAddress), bID, bIP, dID)

	for _, id := range []string{aID, bID, dID} {
		waitState(t, c.Cloud, id, types.InstanceStateNameRunning, 2*time.Minute)
	}
	if c.nodes["node1"].vmPID(aID) == 0 || c.nodes["node2"].vmPID(bID) == 0 || c.nodes["node2"].vmPID(dID) == 0 {
		t.Fatalf("placement: want %s on node1, %s and %s on node2", aID, bID, dID)
	}
	con := c.WaitConsole(t, bID, "CLIPPER-INSTANCE-ID", 2*time.Minute)
	if !strings.Contains(con, "CLIPPER-NET ip="+bIP+"/") || !strings.Contains(con, "mtu=1450") {
		t.Errorf("%s: want DHCP address %s with MTU 1450:\n%s", bID, bIP, con)
	}

	c.checkGroupsAcrossNodes(t, aID, web, client)

	// The Internet: an elastic IP, moved across nodes, and a port forward.
	c.allowFromInternet(t, web)
	c.allowFromInternet(t, client)
	c.WaitConsole(t, aID, "CLIPPER-INSTANCE-ID", time.Minute)
	c.checkElasticIP(t, a, b)
	c.checkForward(t, b)
	c.checkJoinRefusals(t)

	c.checkNodeLoss(t, bID, dID)

	desc, err := c.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	if err != nil {
		t.Fatal(err)
	}
	var live []string
	for _, r := range desc.Reservations {
		for _, i := range r.Instances {
			if i.State.Name != types.InstanceStateNameTerminated {
				live = append(live, aws.ToString(i.InstanceId)+"="+string(i.State.Name))
			}
		}
	}
	if len(live) != 2 {
		t.Errorf("instances after node2 returned: %v, want %s and %s running", live, aID, bID)
	}
	n := c.waitProbe(t, aID, c.lastProbe(t, aID), true, 30*time.Second)
	t.Logf("a reaches b again after node2 returned (probe #%d)", n)

	for _, id := range []string{aID, bID} {
		if _, err := c.EC2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
			t.Error(err)
		}
	}
	waitState(t, c.Cloud, aID, types.InstanceStateNameTerminated, time.Minute)
	waitState(t, c.Cloud, bID, types.InstanceStateNameTerminated, time.Minute)
	c.checkRemoveNode(t)
}

// checkGroupsAcrossNodes: b's group allows nothing from a at first; a rule
// with a's group as source opens port 80 across the nodes, a revoke closes
// it, and it is opened again for what follows.
func (c *cluster) checkGroupsAcrossNodes(t *testing.T, aID, web, client string) {
	t.Helper()
	ctx := context.Background()
	c.WaitConsole(t, aID, "PROBE ", 2*time.Minute)
	n := c.waitProbe(t, aID, c.lastProbe(t, aID), false, time.Minute)
	c.waitProbe(t, aID, n, false, time.Minute)
	perm := []types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(80), ToPort: aws.Int32(80),
		UserIdGroupPairs: []types.UserIdGroupPair{{GroupId: aws.String(client)}}}}
	if _, err := c.EC2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(web), IpPermissions: perm}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	n = c.waitProbe(t, aID, c.lastProbe(t, aID), true, 30*time.Second)
	t.Logf("across nodes: a reaches b %v after the rule opened port 80 (probe #%d)", time.Since(start).Round(100*time.Millisecond), n)
	if _, err := c.EC2.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: aws.String(web), IpPermissions: perm}); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	n = c.waitProbe(t, aID, c.lastProbe(t, aID), false, 30*time.Second)
	t.Logf("across nodes: blocked again %v after the revoke (probe #%d)", time.Since(start).Round(100*time.Millisecond), n)
	if _, err := c.EC2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(web), IpPermissions: perm}); err != nil {
		t.Fatal(err)
	}
	c.waitProbe(t, aID, c.lastProbe(t, aID), true, 30*time.Second)
}

// checkNodeLoss kills node 2's agent and cuts its link: node 2 must be
// down within 10 s of the kill and keep's system status impaired. While it
// is away gone is terminated through the API. When node 2 returns, keep
// runs on in the same VM and gone's VM and tap are removed.
func (c *cluster) checkNodeLoss(t *testing.T, keep, gone string) {
	t.Helper()
	ctx := context.Background()
	n2 := c.nodes["node2"]
	vm, goneVM := n2.vmPID(keep), n2.vmPID(gone)
	goneTap := network.TapName(gone)
	if !n2.hasLink(goneTap) {
		t.Fatalf("%s has no tap %s on node2", gone, goneTap)
	}
	killed := time.Now()
	if err := syscall.Kill(n2.proc.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.router.IP("link", "set", "r-n2", "down")
	c.waitNodes(t, map[string]string{"node2": "down", "node1": "ready"}, 20*time.Second)
	took := time.Since(killed)
	t.Logf("node2 marked down %v after its agent was killed and its link cut", took.Round(100*time.Millisecond))
	if took > 10*time.Second {
		t.Errorf("node2 marked down %v after its agent was killed, want within 10 s", took)
	}
	for time.Since(killed) < 15*time.Second && c.systemStatus(t, keep) != "impaired" {
		time.Sleep(200 * time.Millisecond)
	}
	if st := c.systemStatus(t, keep); st != "impaired" {
		t.Errorf("%s on the down node: system status %q, want impaired", keep, st)
	}
	// Terminated while its node is away: it waits in shutting-down.
	term, err := c.EC2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{gone}})
	if err != nil || term.TerminatingInstances[0].CurrentState.Name != types.InstanceStateNameShuttingDown {
		t.Fatalf("terminate %s on the down node: %+v %v", gone, term, err)
	}

	// Node 2 comes back: same VM for keep, gone stopped and cleaned.
	c.router.IP("link", "set", "r-n2", "up")
	c.startNode(t, n2)
	c.waitNodes(t, map[string]string{"node2": "ready"}, 30*time.Second)
	waitState(t, c.Cloud, gone, types.InstanceStateNameTerminated, time.Minute)
	if n2.vmPID(gone) != 0 || processOf(goneVM, gone) {
		t.Errorf("%s: its QEMU (pid %d) still runs after it was terminated", gone, goneVM)
	}
	if n2.hasLink(goneTap) {
		t.Errorf("%s: its tap %s is still on node2", gone, goneTap)
	}
	for time.Since(killed) < 90*time.Second && c.systemStatus(t, keep) != "ok" {
		time.Sleep(200 * time.Millisecond)
	}
	if st := c.systemStatus(t, keep); st != "ok" {
		t.Errorf("%s after node2 returned: system status %q, want ok", keep, st)
	}
	if got := n2.vmPID(keep); got != vm {
		t.Errorf("%s: VM process %d before the failure, %d after", keep, vm, got)
	}
	if c.nodes["node1"].vmPID(keep) != 0 {
		t.Errorf("%s runs on node1 too", keep)
	}
}
