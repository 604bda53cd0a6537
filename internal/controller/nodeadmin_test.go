package controller_test

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/clipper-cloud/clipper/internal/api"
	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/testutil/cloud"
)

const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// TestCordonDrainUncordon checks the operator's say over scheduling through
// the native API: a cordoned or draining node gets no new instances, keeps
// the ones it has, and stays so across a restart of its agent.
func TestCordonDrainUncordon(t *testing.T) {
	c := cloud.Start(t, cloud.Options{Nodes: 2})
	ctx := context.Background()
	ami := c.ImportImage(t, "guest")
	var nodes []api.NodeInfo
	if err := c.Client.Do(ctx, "GET", api.Prefix+"nodes", nil, 0, emptySHA256, &nodes); err != nil || len(nodes) != 2 {
		t.Fatalf("nodes: %+v %v", nodes, err)
	}
	schedule := func(name, action string) api.NodeInfo {
		t.Helper()
		var n api.NodeInfo
		if err := c.Client.Do(ctx, "POST", api.Prefix+"nodes/"+name+"/"+action, nil, 0, emptySHA256, &n); err != nil {
			t.Fatalf("%s %s: %v", action, name, err)
		}
		return n
	}
	run := func(n int32) ([]string, error) {
		out, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), MinCount: aws.Int32(n), MaxCount: aws.Int32(n)})
		if err != nil {
			return nil, err
		}
		var ids []string
		for _, i := range out.Instances {
			ids = append(ids, aws.ToString(i.InstanceId))
		}
		return ids, nil
	}
	placedOn := func(ids []string) map[string]int {
		t.Helper()
		want := map[string]bool{}
		for _, id := range ids {
			want[id] = true
		}
		per := map[string]int{}
		for _, n := range nodes {
			d, err := c.Ctrl.Service().NodeDesired(ctx, n.ID, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, di := range d.Instances {
				if want[di.ID] {
					per[n.ID]++
				}
			}
		}
		return per
	}
	before, err := run(2)
	if err != nil {
		t.Fatal(err)
	}

	if n := schedule(nodes[0].Name, "cordon"); n.State != model.NodeCordoned {
		t.Fatalf("cordon: state %s", n.State)
	}
	if n := schedule(nodes[1].Name, "drain"); n.State != model.NodeDraining {
		t.Fatalf("drain: state %s", n.State)
	}
	if _, err := run(1); apiCode(err) != "InsufficientInstanceCapacity" {
		t.Fatalf("launch with every node cordoned: %v", err)
	}
	// The instances already placed keep running.
	out, err := c.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: before})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			if i.State.Name != "running" && i.State.Name != "pending" {
				t.Errorf("%s is %s after cordon", aws.ToString(i.InstanceId), i.State.Name)
			}
		}
	}
	// The state survives the agent re-registering.
	n0 := c.Nodes[0]
	n0.Stop()
	c.Nodes[0] = c.StartNode(t, nodes[0].Name, n0.Driver, n0.Dir)
	if err := c.Client.Do(ctx, "GET", api.Prefix+"nodes", nil, 0, emptySHA256, &nodes); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.State != model.NodeCordoned && n.State != model.NodeDraining {
			t.Errorf("after a restart node %s is %s", n.Name, n.State)
		}
	}
	schedule(nodes[1].Name, "uncordon")
	ids, err := run(3)
	if err != nil {
		t.Fatal(err)
	}
	if per := placedOn(ids); per[nodes[1].ID] != 3 {
		t.Errorf("placements after uncordon: %v, want all on %s", per, nodes[1].Name)
	}
	var bad struct{}
	if err := c.Client.Do(ctx, "POST", api.Prefix+"nodes/"+nodes[0].Name+"/explode", nil, 0, emptySHA256, &bad); err == nil ||
		!strings.Contains(err.Error(), "InvalidParameterValue") {
		t.Errorf("unknown action: %v", err)
	}
	if err := c.Client.Do(ctx, "POST", api.Prefix+"nodes/nosuchnode/cordon", nil, 0, emptySHA256, &bad); err == nil {
		t.Error("cordoning an unknown node succeeded")
	}
}
