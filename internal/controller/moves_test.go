package controller_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/clipper-cloud/clipper/internal/agent"
	"github.com/clipper-cloud/clipper/internal/api"
	"github.com/clipper-cloud/clipper/internal/client"
	"github.com/clipper-cloud/clipper/internal/compute"
	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/service"
	"github.com/clipper-cloud/clipper/internal/testutil/cloud"
)

// moveCloud is a three-node cloud whose nodes have underlay addresses, so
// instances can move between them.
func moveCloud(t *testing.T) (*cloud.Cloud, string) {
	c := cloud.Start(t, cloud.Options{Nodes: 3, Agent: func(_ string, cfg *agent.Config) { cfg.Address = "127.0.0.1" }})
	return c, c.ImportImage(t, "guest")
}

// hostOf returns the index of the node whose driver runs id ("running").
func hostOf(t *testing.T, c *cloud.Cloud, id string) int {
	t.Helper()
	for k, n := range c.Nodes {
		if st, err := n.Driver.Status(context.Background(), id); err == nil && st.State == compute.StateRunning {
			return k
		}
	}
	return -1
}

// runOne launches one instance and waits until it runs.
func runOne(t *testing.T, c *cloud.Cloud, ami string) types.Instance {
	t.Helper()
	run, err := c.EC2.RunInstances(context.Background(), &ec2.RunInstancesInput{ImageId: aws.String(ami), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	c.WaitState(t, aws.ToString(run.Instances[0].InstanceId), types.InstanceStateNameRunning, 10*time.Second)
	return run.Instances[0]
}

func postJSON(ctx context.Context, c *cloud.Cloud, path string, in, out any) error {
	body, _ := json.Marshal(in)
	sum := sha256.Sum256(body)
	return c.Client.Do(ctx, "POST", path, bytes.NewReader(body), int64(len(body)), hex.EncodeToString(sum[:]), out)
}

func clientCode(err error) string {
	var ae *client.APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

// TestMoveInstance moves a running instance live to a named node and checks
// that it ends there, still running, with its console, that the source let
// go of it, and that usage followed it; then the refusals.
func TestMoveInstance(t *testing.T) {
	c, ami := moveCloud(t)
	ctx := context.Background()
	run := runOne(t, c, ami)
	id := aws.ToString(run.InstanceId)
	src := hostOf(t, c, id)
	if src < 0 {
		t.Fatal("no node runs the instance")
	}
	dst := (src + 1) % 3
	var mv service.Move
	if err := postJSON(ctx, c, api.Prefix+"instances/"+id+"/move", api.MoveRequest{Node: nodeName(dst)}, &mv); err != nil {
		t.Fatal(err)
	}
	if mv.From != nodeName(src) || mv.To != nodeName(dst) || mv.InstanceID != id {
		t.Fatalf("move: %+v", mv)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, srcErr := c.Nodes[src].Driver.Status(ctx, id)
		if hostOf(t, c, id) == dst && errors.Is(srcErr, compute.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s the instance runs on node %d, the source says %v", hostOf(t, c, id), srcErr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	inst := c.WaitState(t, id, types.InstanceStateNameRunning, time.Second)
	if aws.ToString(inst.PrivateIpAddress) != aws.ToString(run.PrivateIpAddress) {
		t.Fatalf("the address changed: %s -> %s", aws.ToString(run.PrivateIpAddress), aws.ToString(inst.PrivateIpAddress))
	}
	con, err := c.Nodes[dst].Driver.Console(ctx, id, 1<<16)
	if err != nil || !strings.Contains(string(con), "CLIPPER-GUEST-READY") || !strings.Contains(string(con), "fake: migrated") {
		t.Fatalf("console at the destination: %q %v", con, err)
	}
	// The controller's desired state agrees: the destination runs it
	// without a move, the source no longer lists it.
	nodes := listNodes(t, c)
	for _, n := range nodes {
		d, err := c.Ctrl.Service().NodeDesired(ctx, n.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		listed := false
		for _, di := range d.Instances {
			if di.ID == id && di.Power != model.PowerAbsent {
				// (The source may not have reported letting go yet.)
				listed = true
				if di.Move != nil {
					t.Fatalf("node %s still has a move: %+v", n.Name, di.Move)
				}
			}
		}
		if listed != (n.Name == nodeName(dst)) {
			t.Fatalf("node %s lists the instance: %v", n.Name, listed)
		}
		wantVCPUs := 0
		if n.Name == nodeName(dst) {
			wantVCPUs = int(aws.ToInt32(inst.CpuOptions.CoreCount) * aws.ToInt32(inst.CpuOptions.ThreadsPerCore))
		}
		if n.Used.VCPUs != wantVCPUs {
			t.Fatalf("node %s uses %d vCPUs, want %d", n.Name, n.Used.VCPUs, wantVCPUs)
		}
	}

	// Refusals: the node it is on, an unknown node, a malformed ID, a
	// stopped instance.
	for _, tc := range []struct{ id, node, code string }{
		{id, nodeName(dst), "InvalidParameterValue"},
		{id, "nosuchnode", "InvalidParameterValue"},
		{"i-nothex", "", "InvalidInstanceID.Malformed"},
		{"i-0123456789abcdef0", "", "InvalidInstanceID.NotFound"},
	} {
		err := postJSON(ctx, c, api.Prefix+"instances/"+tc.id+"/move", api.MoveRequest{Node: tc.node}, nil)
		if clientCode(err) != tc.code {
			t.Errorf("move %s to %q: %v, want %s", tc.id, tc.node, err, tc.code)
		}
	}
	if _, err := c.EC2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	c.WaitState(t, id, types.InstanceStateNameStopped, 10*time.Second)
	if err := postJSON(ctx, c, api.Prefix+"instances/"+id+"/move", api.MoveRequest{}, nil); clientCode(err) != "IncorrectInstanceState" {
		t.Fatalf("moving a stopped instance: %v", err)
	}
}

// TestDrainMovesInstances drains a node: its running instances move to the
// other nodes, its stopped one stays and says why.
func TestDrainMovesInstances(t *testing.T) {
	c, ami := moveCloud(t)
	ctx := context.Background()
	run, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), MinCount: aws.Int32(6), MaxCount: aws.Int32(6)})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, i := range run.Instances {
		ids = append(ids, aws.ToString(i.InstanceId))
	}
	for _, id := range ids {
		c.WaitState(t, id, types.InstanceStateNameRunning, 10*time.Second)
	}
	// Spread: node1 has two of them. Stop one there.
	var on1 []string
	for _, id := range ids {
		if hostOf(t, c, id) == 0 {
			on1 = append(on1, id)
		}
	}
	if len(on1) < 2 {
		t.Fatalf("node1 runs %d instances, want 2 (spread)", len(on1))
	}
	if _, err := c.EC2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: on1[:1]}); err != nil {
		t.Fatal(err)
	}
	c.WaitState(t, on1[0], types.InstanceStateNameStopped, 10*time.Second)

	var n api.NodeInfo
	if err := c.Client.Do(ctx, "POST", api.Prefix+"nodes/node1/drain", nil, 0, emptySHA256, &n); err != nil {
		t.Fatal(err)
	}
	if n.State != "draining" || len(n.Moves) != len(on1) {
		t.Fatalf("drain: %+v", n)
	}
	for _, m := range n.Moves {
		switch {
		case m.InstanceID == on1[0] && (m.Error == "" || m.To != ""):
			t.Errorf("the stopped instance: %+v", m)
		case m.InstanceID != on1[0] && (m.Error != "" || m.To == "" || m.To == "node1"):
			t.Errorf("a running instance: %+v", m)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, id := range on1[1:] {
		for hostOf(t, c, id) <= 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not leave node1", id)
			}
			time.Sleep(20 * time.Millisecond)
		}
		c.WaitState(t, id, types.InstanceStateNameRunning, time.Second)
	}
}

func nodeName(k int) string { return "node" + string(rune('1'+k)) }

func listNodes(t *testing.T, c *cloud.Cloud) []api.NodeInfo {
	t.Helper()
	var nodes []api.NodeInfo
	if err := c.Client.Do(context.Background(), "GET", api.Prefix+"nodes", nil, 0, emptySHA256, &nodes); err != nil {
		t.Fatal(err)
	}
	return nodes
}

// TestMoveCalledOff: the destination's agent dies before it prepared the
// instance; once the node is down the move is called off, the instance runs
// on where it was, and the returning node has nothing of it.
func TestMoveCalledOff(t *testing.T) {
	c := cloud.Start(t, cloud.Options{Nodes: 3, Agent: func(_ string, cfg *agent.Config) { cfg.Address = "127.0.0.1" },
		Service: func(cfg *service.Config) { cfg.PublicPools = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/28")} }})
	ami := c.ImportImage(t, "guest")
	ctx := context.Background()
	id := aws.ToString(runOne(t, c, ami).InstanceId)
	alloc, err := c.EC2.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: types.DomainTypeVpc})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.EC2.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: alloc.AllocationId, InstanceId: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	src := hostOf(t, c, id)
	dst := (src + 1) % 3
	c.Nodes[dst].Stop()
	if err := postJSON(ctx, c, api.Prefix+"instances/"+id+"/move", api.MoveRequest{Node: nodeName(dst)}, nil); err != nil {
		t.Fatal(err)
	}
	srcID, dstID := "", ""
	for _, n := range listNodes(t, c) {
		switch n.Name {
		case nodeName(src):
			srcID = n.ID
		case nodeName(dst):
			dstID = n.ID
		}
	}
	// While it moves, the elastic IP is the source's alone.
	for nodeID, want := range map[string]string{srcID: aws.ToString(alloc.PublicIp), dstID: ""} {
		d, err := c.Ctrl.Service().NodeDesired(ctx, nodeID, 0)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, di := range d.Instances {
			if di.ID == id {
				found = true
				if di.Network.PublicIP != want {
					t.Fatalf("node %s is told public IP %q during the move, want %q", nodeID, di.Network.PublicIP, want)
				}
				// The destination admits the source's stream only.
				if nodeID == dstID && (di.Move == nil || di.Move.Role != nodeproto.MoveIn || di.Move.From != nodeName(src)) {
					t.Fatalf("the destination is told %+v, want to take the instance from %s", di.Move, nodeName(src))
				}
			}
		}
		if !found {
			t.Fatalf("node %s does not list the moving instance", nodeID)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		d, err := c.Ctrl.Service().NodeDesired(ctx, srcID, 0)
		if err != nil {
			t.Fatal(err)
		}
		moving := false
		for _, di := range d.Instances {
			moving = moving || (di.ID == id && di.Move != nil)
		}
		if !moving {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the move was not called off 20 s after its destination stopped reporting")
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.WaitState(t, id, types.InstanceStateNameRunning, time.Second)
	if hostOf(t, c, id) != src {
		t.Fatalf("the instance runs on node %d, want %d", hostOf(t, c, id), src)
	}
	back := c.StartNode(t, nodeName(dst), c.Nodes[dst].Driver, c.Nodes[dst].Dir)
	c.Nodes[dst] = back
	time.Sleep(500 * time.Millisecond)
	if _, err := back.Driver.Status(ctx, id); !errors.Is(err, compute.ErrNotFound) {
		t.Fatalf("the returning destination holds the instance: %v", err)
	}
	// The instance can move again once the node is back.
	var mv service.Move
	for time.Now().Before(deadline.Add(10 * time.Second)) {
		if err = postJSON(ctx, c, api.Prefix+"instances/"+id+"/move", api.MoveRequest{Node: nodeName(dst)}, &mv); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("moving again: %v", err)
	}
	for hostOf(t, c, id) != dst {
		if time.Now().After(deadline.Add(20 * time.Second)) {
			t.Fatal("the second move did not arrive")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
