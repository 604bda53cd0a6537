package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// TestLifecycleSDKAndCLI is the walking skeleton end to end: `clipper up`,
// the test guest imported with `clipper image import`, two real VMs run and
// driven with both aws-sdk-go-v2 and the AWS CLI v2.
func TestLifecycleSDKAndCLI(t *testing.T) {
	requireVMs(t)
	c := StartCloud(t)
	ctx := context.Background()
	ami := c.ImportGuest(t, "guest")

	// The AWS CLI v2: a key pair and the image are visible.
	fp := c.AWS(t, "ec2", "create-key-pair", "--key-name", "demo", "--query", "KeyFingerprint", "--output", "text")
	if strings.Count(fp, ":") != 19 {
		t.Fatalf("key fingerprint %q", fp)
	}
	if got := c.AWS(t, "ec2", "describe-images", "--owners", "self", "--query", "Images[0].ImageId", "--output", "text"); got != ami {
		t.Fatalf("describe-images: %q", got)
	}
	// The README's way: a shell that sources aws.env and runs plain `aws`,
	// with nothing else set (the file's aws function adds the endpoint for
	// CLIs that ignore AWS_ENDPOINT_URL).
	sh := ". " + filepath.Join(c.Dir, "aws.env") + " && aws ec2 describe-key-pairs --query 'KeyPairs[0].KeyName' --output text"
	if out, err := c.NS.Output("env", "-i", "PATH=/usr/bin:/bin", "HOME="+c.Dir, "bash", "-c", sh); err != nil || strings.TrimSpace(out) != "demo" {
		t.Fatalf("plain aws after sourcing aws.env: %v: %q", err, out)
	}

	// The SDK: run two instances, wait with the SDK's own waiter.
	run, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Micro,
		KeyName: aws.String("demo"), MinCount: aws.Int32(2), MaxCount: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{*run.Instances[0].InstanceId, *run.Instances[1].InstanceId}
	w := ec2.NewInstanceRunningWaiter(c.EC2, func(o *ec2.InstanceRunningWaiterOptions) { o.MinDelay, o.MaxDelay = time.Second, 2*time.Second })
	if err := w.Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids}, 2*time.Minute); err != nil {
		t.Fatalf("InstanceRunning waiter: %v", err)
	}
	for _, id := range ids {
		c.WaitConsole(t, id, "CLIPPER-GUEST-READY", 2*time.Minute)
	}
	// The VMs are real QEMU processes.
	for _, id := range ids {
		if pid := qemuPID(t, c, id); pid == 0 {
			t.Fatalf("%s has no QEMU process", id)
		}
	}

	// The CLI: filters, console output, stop, start, reboot.
	running := c.AWS(t, "ec2", "describe-instances", "--filters", "Name=instance-state-name,Values=running",
		"--query", "length(Reservations[].Instances[])", "--output", "text")
	if running != "2" {
		t.Fatalf("running instances: %s", running)
	}
	if out := c.AWS(t, "ec2", "get-console-output", "--instance-id", ids[0], "--output", "text"); !strings.Contains(out, "CLIPPER-GUEST-READY") {
		t.Fatalf("get-console-output: %s", out)
	}
	c.AWS(t, "ec2", "stop-instances", "--instance-ids", ids[0])
	c.AWS(t, "ec2", "wait", "instance-stopped", "--instance-ids", ids[0])
	if pid := qemuPID(t, c, ids[0]); pid != 0 {
		t.Fatalf("stopped instance still has QEMU %d", pid)
	}
	c.AWS(t, "ec2", "start-instances", "--instance-ids", ids[0])
	c.AWS(t, "ec2", "wait", "instance-running", "--instance-ids", ids[0])
	before := strings.Count(c.WaitConsole(t, ids[1], "CLIPPER-GUEST-READY", time.Minute), "CLIPPER-GUEST-READY")
	c.AWS(t, "ec2", "reboot-instances", "--instance-ids", ids[1])
	deadline := time.Now().Add(2 * time.Minute)
	for strings.Count(c.WaitConsole(t, ids[1], "CLIPPER-GUEST-READY", time.Minute), "CLIPPER-GUEST-READY") <= before {
		if time.Now().After(deadline) {
			t.Fatal("reboot did not boot the guest again")
		}
		time.Sleep(time.Second)
	}

	// Idempotency: the CLI's --client-token returns the same reservation.
	tok := "e2e-token-1"
	r1 := c.AWS(t, "ec2", "run-instances", "--image-id", ami, "--count", "1", "--client-token", tok, "--query", "Instances[0].InstanceId", "--output", "text")
	r2 := c.AWS(t, "ec2", "run-instances", "--image-id", ami, "--count", "1", "--client-token", tok, "--query", "Instances[0].InstanceId", "--output", "text")
	if r1 != r2 {
		t.Fatalf("same client token, two instances: %s %s", r1, r2)
	}
	ids = append(ids, r1)

	// Errors: unknown instance and a wrong signature, through both clients.
	out, err := c.Output(t, awsCLI, "--endpoint-url", c.creds["AWS_ENDPOINT_URL"], "ec2", "describe-instances", "--instance-ids", "i-0123456789abcdef0")
	if err == nil || !strings.Contains(out, "InvalidInstanceID.NotFound") {
		t.Fatalf("unknown instance: %v %s", err, out)
	}
	if _, err := c.client(c.creds["AWS_ACCESS_KEY_ID"], "wrong").DescribeInstances(ctx, &ec2.DescribeInstancesInput{}); apiCode(err) != "AuthFailure" {
		t.Fatalf("wrong secret: %v", err)
	}
	out, err = c.Output(t, "env", "AWS_SECRET_ACCESS_KEY=wrong", awsCLI, "--endpoint-url", c.creds["AWS_ENDPOINT_URL"], "ec2", "describe-instances")
	if err == nil || !strings.Contains(out, "AuthFailure") {
		t.Fatalf("CLI with a wrong secret: %v %s", err, out)
	}

	// Terminate everything and wait with the SDK waiter.
	if _, err := c.EC2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: ids}); err != nil {
		t.Fatal(err)
	}
	tw := ec2.NewInstanceTerminatedWaiter(c.EC2, func(o *ec2.InstanceTerminatedWaiterOptions) { o.MinDelay, o.MaxDelay = time.Second, 2*time.Second })
	if err := tw.Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids}, 2*time.Minute); err != nil {
		t.Fatalf("InstanceTerminated waiter: %v", err)
	}
	for _, id := range ids {
		if pid := qemuPID(t, c, id); pid != 0 {
			t.Fatalf("terminated %s still has QEMU %d", id, pid)
		}
	}
}

// qemuPID reads the QEMU PID of an instance under `clipper up`'s node dir
// and checks it is alive; 0 when it is not running.
func qemuPID(t testing.TB, c *Cloud, id string) int {
	t.Helper()
	for _, dir := range []string{c.Dir + "/node/vms/", c.Dir + "/vms/"} {
		b, err := os.ReadFile(dir + id + "/qemu.pid")
		if err != nil {
			continue
		}
		var pid int
		if _, err := fmtSscan(string(b), &pid); err != nil {
			continue
		}
		cmd, err := os.ReadFile("/proc/" + itoa(pid) + "/cmdline")
		if err == nil && strings.Contains(string(cmd), "guest="+id) {
			return pid
		}
	}
	return 0
}

// TestPagingWithCLI launches 25 instances on the fake driver and pages
// through them five at a time with the AWS CLI (--page-size sends
// MaxResults and follows NextToken).
func TestPagingWithCLI(t *testing.T) {
	requireNS(t)
	c := StartCloud(t, "--driver", "fake", "--log-level", "debug", "--overcommit-cpu", "64")
	kernel := writeTemp(t, "fake-kernel")
	ami := c.Run(t, clipperBin, "image", "import", "--name", "fake", "--kernel", kernel)
	for range 5 {
		c.AWS(t, "ec2", "run-instances", "--image-id", ami, "--count", "5")
	}
	before := strings.Count(c.Proc("up").Stderr(), "action=DescribeInstances")
	out := c.AWS(t, "ec2", "describe-instances", "--page-size", "5", "--query", "Reservations[].Instances[].InstanceId", "--output", "json")
	var ids []string
	if err := json.Unmarshal([]byte(out), &ids); err != nil {
		t.Fatalf("CLI output: %v\n%s", err, out)
	}
	seen := map[string]bool{}
	for _, id := range ids {
		seen[id] = true
	}
	if len(ids) != 25 || len(seen) != 25 {
		t.Fatalf("paged %d instances (%d distinct), want 25", len(ids), len(seen))
	}
	if calls := strings.Count(c.Proc("up").Stderr(), "action=DescribeInstances") - before; calls != 5 {
		t.Fatalf("the CLI made %d DescribeInstances calls, want 5 pages", calls)
	}
}
