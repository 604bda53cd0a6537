package e2e

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/clipper-cloud/clipper/internal/testutil/netns"
)

// TestNodeAgentKill9KeepsVM runs the controller and the node agent as
// separate processes, kills the agent with SIGKILL while a VM runs, starts
// it again, and checks the VM is the same process and still running, and
// that the restarted agent still controls it.
func TestNodeAgentKill9KeepsVM(t *testing.T) {
	requireVMs(t)
	c := &Cloud{NS: netns.New(t, "kill9"), Dir: t.TempDir(), procs: map[string]*netns.Proc{}}
	c.Start(t, "controller", "controller", "--data-dir", c.Dir, "--listen", "127.0.0.1:8773")
	c.waitEnv(t)
	nodeArgs := []string{"node", "--controller", "http://127.0.0.1:8774", "--token-file", filepath.Join(c.Dir, "node-token"),
		"--data-dir", filepath.Join(c.Dir, "node"), "--name", "node1"}
	c.Start(t, "node", nodeArgs...)
	ctx := context.Background()
	ami := c.ImportGuest(t, "guest")
	run, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	id := *run.Instances[0].InstanceId
	waitState(t, c, id, types.InstanceStateNameRunning, 2*time.Minute)
	c.WaitConsole(t, id, "CLIPPER-GUEST-READY", 2*time.Minute)
	pid := qemuPID(t, c, id)
	if pid == 0 {
		t.Fatal("no QEMU process")
	}

	if err := syscall.Kill(c.Proc("node").PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c.Proc("node").Done()
	if qemuPID(t, c, id) != pid {
		t.Fatal("the VM died with its agent")
	}
	c.Start(t, "node", nodeArgs...)
	// The restarted agent adopts the VM: same process, still running.
	time.Sleep(3 * time.Second)
	if got := qemuPID(t, c, id); got != pid {
		t.Fatalf("VM process changed across the agent restart: %d -> %d", pid, got)
	}
	waitState(t, c, id, types.InstanceStateNameRunning, 30*time.Second)
	// And it still controls it.
	if _, err := c.EC2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	waitState(t, c, id, types.InstanceStateNameStopped, 2*time.Minute)
	if qemuPID(t, c, id) != 0 {
		t.Fatal("stopped, but QEMU still runs")
	}
	if _, err := c.EC2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	waitState(t, c, id, types.InstanceStateNameTerminated, time.Minute)
}

func waitState(t testing.TB, c *Cloud, id string, want types.InstanceStateName, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var last types.InstanceStateName
	for time.Now().Before(deadline) {
		out, err := c.EC2.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err == nil && len(out.Reservations) == 1 {
			last = out.Reservations[0].Instances[0].State.Name
			if last == want {
				return
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("%s: %s after %s, want %s", id, last, within, want)
}
