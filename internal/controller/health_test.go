package controller_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/clipper-cloud/clipper/internal/service"
	"github.com/clipper-cloud/clipper/internal/testutil/cloud"
)

// TestDownNodeImpairsItsInstances stops a node's agent and reads, through
// aws-sdk-go-v2's decoders, what DescribeInstanceStatus says of its
// instance: the system reachability check failed since the node's last
// report, the instance check has no data, no event is made up; the
// reachability filters find it. The agent's return makes it ok again.
func TestDownNodeImpairsItsInstances(t *testing.T) {
	const downAfter = 3 * time.Second // the agents report every 2 s
	c := cloud.Start(t, cloud.Options{Service: func(sc *service.Config) { sc.NodeDownAfter = downAfter }})
	ctx := context.Background()
	ami := c.ImportImage(t, "guest")
	run, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(run.Instances[0].InstanceId)
	c.WaitState(t, id, types.InstanceStateNameRunning, 10*time.Second)
	status := func(filters ...types.Filter) []types.InstanceStatus {
		t.Helper()
		out, err := c.EC2.DescribeInstanceStatus(ctx, &ec2.DescribeInstanceStatusInput{InstanceIds: []string{id}, Filters: filters})
		if err != nil {
			t.Fatal(err)
		}
		return out.InstanceStatuses
	}
	if st := status(); len(st) != 1 || st[0].SystemStatus.Status != types.SummaryStatusOk ||
		st[0].SystemStatus.Details[0].ImpairedSince != nil {
		t.Fatalf("running on a live node: %+v", st)
	}

	n := c.Nodes[0]
	stopped := time.Now()
	n.Stop()
	waitFor(t, func() bool {
		st := status()
		return len(st) == 1 && st[0].SystemStatus.Status == types.SummaryStatusImpaired
	})
	st := status()[0]
	sys := st.SystemStatus.Details
	if len(sys) != 1 || sys[0].Name != types.StatusNameReachability || sys[0].Status != types.StatusTypeFailed || sys[0].ImpairedSince == nil {
		t.Fatalf("system status details: %+v", sys)
	}
	// Impaired since the last report: before the agent stopped, by at most
	// one report interval (and a second of slack for a slow report).
	if since := *sys[0].ImpairedSince; since.After(stopped) || stopped.Sub(since) > service.ReportInterval+time.Second {
		t.Errorf("impaired since %v, the agent stopped at %v", since, stopped)
	}
	if st.InstanceStatus.Status != types.SummaryStatusInsufficientData ||
		st.InstanceStatus.Details[0].Status != types.StatusTypeInsufficientData || st.InstanceStatus.Details[0].ImpairedSince != nil {
		t.Errorf("instance status: %+v", st.InstanceStatus)
	}
	if len(st.Events) != 0 {
		t.Errorf("events %+v: EC2 has no event code for an unreachable host", st.Events)
	}
	if st.InstanceState.Name != types.InstanceStateNameRunning {
		t.Errorf("state %s: a down node's instances are not stopped or terminated", st.InstanceState.Name)
	}
	failed := types.Filter{Name: aws.String("system-status.reachability"), Values: []string{"failed"}}
	passed := types.Filter{Name: aws.String("system-status.reachability"), Values: []string{"passed"}}
	if len(status(failed)) != 1 || len(status(passed)) != 0 {
		t.Errorf("reachability filters: failed %d, passed %d", len(status(failed)), len(status(passed)))
	}

	c.Nodes[0] = c.StartNode(t, "node1", n.Driver, n.Dir)
	waitFor(t, func() bool {
		st := status()
		return len(st) == 1 && st[0].SystemStatus.Status == types.SummaryStatusOk
	})
	if d := status()[0].SystemStatus.Details[0]; d.Status != types.StatusTypePassed || d.ImpairedSince != nil {
		t.Errorf("after the node returned: %+v", d)
	}
}
