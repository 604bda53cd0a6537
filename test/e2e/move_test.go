package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/clipper-cloud/clipper/internal/network"
)

// TestLiveMove moves a real VM between two nodes of one zone while another
// instance keeps asking its web server: `clipper instance move` takes it
// from node 1 to node 2 and `clipper node drain node2` brings it back. The
// guest never reboots (one CLIPPER-GUEST-READY on its console), keeps its
// address, answers across the overlay after each move, and the node it
// left holds neither its QEMU process nor its tap.
func TestLiveMove(t *testing.T) {
	requireVMs(t)
	c := startCluster(t, "clipper-1a", "clipper-1a")
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.nodes {
				t.Logf("%s agent log:\n%s", n.name, tail(n.proc.Stderr(), 4000))
			}
		}
	})
	ami := c.ImportGuest(t, "guest")
	// Both start on node1: node2 is cordoned while they launch.
	c.Run(t, clipperBin, "node", "cordon", "node2")
	b := c.launchOn(t, "node1", &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Micro,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	bID, bIP := aws.ToString(b.InstanceId), aws.ToString(b.PrivateIpAddress)
	probe := fmt.Sprintf("#!/bin/sh\nn=0\nwhile :; do n=$((n+1)); r=$(timeout 2 wget -q -O - http://%s/ 2>/dev/null | head -c 40); echo \"PROBE $n [$r]\"; sleep 1; done\n", bIP)
	a := c.launchOn(t, "node1", &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Micro,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), UserData: aws.String(encode64(probe))})
	aID := aws.ToString(a.InstanceId)
	for _, id := range []string{aID, bID} {
		waitState(t, c.Cloud, id, types.InstanceStateNameRunning, 2*time.Minute)
	}
	c.Run(t, clipperBin, "node", "uncordon", "node2")
	n1, n2 := c.nodes["node1"], c.nodes["node2"]
	if n1.vmPID(aID) == 0 || n1.vmPID(bID) == 0 {
		t.Fatalf("want %s and %s on node1", aID, bID)
	}
	c.WaitConsole(t, bID, "CLIPPER-INSTANCE-ID", 2*time.Minute)
	c.waitProbe(t, aID, 0, true, time.Minute)
	// b has an elastic IP, reached from the router (the Internet).
	ctx := context.Background()
	c.allowFromInternet(t, aws.ToString(b.SecurityGroups[0].GroupId))
	alloc, err := c.EC2.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: types.DomainTypeVpc})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.EC2.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: alloc.AllocationId, InstanceId: b.InstanceId}); err != nil {
		t.Fatal(err)
	}
	eip := aws.ToString(alloc.PublicIp)
	c.checkEIPOn(t, eip, bID, n1)

	// Out to node2, by name.
	out := c.Run(t, clipperBin, "instance", "move", bID, "--node", "node2")
	if !strings.Contains(out, bID+" moving node1 -> node2") {
		t.Fatalf("instance move said %q", out)
	}
	start := time.Now()
	c.waitHost(t, bID, n2, n1, time.Minute)
	t.Logf("%s moved to node2 in %v", bID, time.Since(start).Round(10*time.Millisecond))
	n := c.waitProbe(t, aID, c.lastProbe(t, aID), true, 30*time.Second)
	t.Logf("a reaches b on node2 across the overlay (probe #%d)", n)
	c.checkMoved(t, bID, bIP)
	checkMovedOverTLS(t, n2, bID)
	c.checkEIPOn(t, eip, bID, n2)

	// Back by draining node2.
	out = c.Run(t, clipperBin, "node", "drain", "node2")
	if !strings.Contains(out, bID+" moving node2 -> node1") {
		t.Fatalf("node drain said %q", out)
	}
	c.waitHost(t, bID, n1, n2, time.Minute)
	n = c.waitProbe(t, aID, c.lastProbe(t, aID), true, 30*time.Second)
	t.Logf("a reaches b back on node1 (probe #%d)", n)
	c.checkMoved(t, bID, bIP)
	c.checkEIPOn(t, eip, bID, n1)
	if states := c.nodeStates(t); states["node2"] != "draining" {
		t.Errorf("node2 after the drain: %q", states["node2"])
	}
	c.Run(t, clipperBin, "node", "uncordon", "node2")
	c.checkDiskMove(t)
}

// checkDiskMove moves an instance of the whole-disk guest (firmware boot
// from its qcow2 overlay) from node1 to node2: it runs on there without a
// reboot, and boots again from the moved disk when reset.
func (c *cluster) checkDiskMove(t *testing.T) {
	kernel, _ := guest(t)
	disk := filepath.Join(filepath.Dir(kernel), "disk.qcow2")
	if _, err := os.Stat(disk); err != nil {
		t.Fatalf("no whole-disk test guest (%v): run `make guest-image` (`make test` does)", err)
	}
	ami := strings.TrimSpace(c.Run(t, clipperBin, "image", "import", "--name", "disk-guest", disk))
	c.Run(t, clipperBin, "node", "cordon", "node2")
	w := c.launchOn(t, "node1", &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Micro,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	c.Run(t, clipperBin, "node", "uncordon", "node2")
	wID, wIP := aws.ToString(w.InstanceId), aws.ToString(w.PrivateIpAddress)
	c.WaitConsole(t, wID, "CLIPPER-INSTANCE-ID", 3*time.Minute)
	start := time.Now()
	c.Run(t, clipperBin, "instance", "move", wID, "--node", "node2")
	c.waitHost(t, wID, c.nodes["node2"], c.nodes["node1"], 2*time.Minute)
	t.Logf("whole-disk instance %s moved to node2 in %v", wID, time.Since(start).Round(10*time.Millisecond))
	c.checkMoved(t, wID, wIP)
	if _, err := c.EC2.RebootInstances(context.Background(), &ec2.RebootInstancesInput{InstanceIds: []string{wID}}); err != nil {
		t.Fatal(err)
	}
	c.waitCount(t, wID, "CLIPPER-GUEST-READY", 2, 3*time.Minute)
}

// waitHost waits until id's VM runs on to and is gone from from, tap
// included.
func (c *cluster) waitHost(t testing.TB, id string, to, from *clusterNode, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if to.vmPID(id) != 0 && from.vmPID(id) == 0 && !from.hasLink(network.TapName(id)) && to.hasLink(network.TapName(id)) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s after %s: QEMU on %s %d, on %s %d; tap on %s %v", id, within, to.name, to.vmPID(id), from.name, from.vmPID(id),
		from.name, from.hasLink(network.TapName(id)))
}

// checkMoved: the moved instance is running with its address, and its
// guest never rebooted.
func (c *cluster) checkMoved(t *testing.T, id, ip string) {
	t.Helper()
	waitState(t, c.Cloud, id, types.InstanceStateNameRunning, 10*time.Second)
	desc, err := c.EC2.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	if got := aws.ToString(desc.Reservations[0].Instances[0].PrivateIpAddress); got != ip {
		t.Errorf("%s: address %s, was %s", id, got, ip)
	}
	con, err := c.EC2.GetConsoleOutput(context.Background(), &ec2.GetConsoleOutputInput{InstanceId: aws.String(id)})
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(decode64(aws.ToString(con.Output)), "CLIPPER-GUEST-READY"); n != 1 {
		t.Errorf("%s: CLIPPER-GUEST-READY %d times on its console, want once (no reboot)", id, n)
	}
}

// checkMovedOverTLS checks that the instance's QEMU on n received its
// state on the unix socket behind the node's TLS tunnel, not on a TCP
// port of its own: the move was encrypted.
func checkMovedOverTLS(t *testing.T, n *clusterNode, id string) {
	t.Helper()
	pid := n.vmPID(id)
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Split(string(cmdline), "\x00")
	i := slices.Index(args, "-incoming")
	if i < 0 || i+1 >= len(args) || !strings.HasPrefix(args[i+1], "unix:") {
		t.Fatalf("%s on %s was not moved through the TLS tunnel: %q", id, n.name, args)
	}
}

// BenchmarkLiveMove: one real VM (256 MiB) moved between the two nodes of
// a zone and back, 6 times: from the move call to its QEMU running on the
// destination and gone from the source, tap included.
func BenchmarkLiveMove(b *testing.B) {
	requireVMs(b)
	c := startCluster(b, "clipper-1a", "clipper-1a")
	ami := c.ImportGuest(b, "bench")
	c.Run(b, clipperBin, "node", "cordon", "node2")
	inst := c.launchOn(b, "node1", &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Micro,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	id := aws.ToString(inst.InstanceId)
	c.WaitConsole(b, id, "CLIPPER-INSTANCE-ID", 2*time.Minute)
	c.Run(b, clipperBin, "node", "uncordon", "node2")
	nodes := []*clusterNode{c.nodes["node1"], c.nodes["node2"]}
	var took []time.Duration
	for b.Loop() {
		for k := range 6 {
			from, to := nodes[k%2], nodes[(k+1)%2]
			start := time.Now()
			// Right after a move, the former node may not have reported
			// that it let go: the controller refuses until it has.
			for {
				out, err := c.Output(b, clipperBin, "instance", "move", id, "--node", to.name)
				if err == nil {
					break
				}
				if !strings.Contains(out, "former node") || time.Since(start) > 10*time.Second {
					b.Fatalf("move: %v: %s", err, out)
				}
				time.Sleep(50 * time.Millisecond)
			}
			c.waitHost(b, id, to, from, time.Minute)
			took = append(took, time.Since(start))
		}
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	b.ReportMetric(took[len(took)/2].Seconds(), "p50-s")
	b.ReportMetric(took[len(took)-1].Seconds(), "max-s")
	b.ReportMetric(0, "ns/op")
}

// checkEIPOn: the router reaches the elastic IP at node's MAC (the node
// that hosts the instance answers ARP for it, and announced it when the
// instance arrived), and the instance answers there.
func (c *cluster) checkEIPOn(t *testing.T, eip, id string, node *clusterNode) {
	t.Helper()
	start := time.Now()
	c.waitWho(t, eip, "clipper-guest "+id+" from "+publicGW, 30*time.Second)
	t.Logf("elastic IP %s reaches %s on %s %v after the check began", eip, id, node.name, time.Since(start).Round(10*time.Millisecond))
	if mac, want := c.neighMAC(eip), node.mac(t); mac != want {
		t.Errorf("the router reaches %s at %q, want %s's %s", eip, mac, node.name, want)
	}
}
