package controller_test

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/clipper-cloud/clipper/internal/testutil/cloud"
)

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// TestSDKLifecycle drives every issue-2 action through aws-sdk-go-v2, so the
// XML shapes are checked by the SDK's own decoders.
func TestSDKLifecycle(t *testing.T) {
	c := cloud.Start(t, cloud.Options{})
	ctx := context.Background()
	ami := c.ImportImage(t, "guest")

	imgs, err := c.EC2.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}})
	if err != nil || len(imgs.Images) != 1 || *imgs.Images[0].ImageId != ami || *imgs.Images[0].RootDeviceName != "/dev/xvda" ||
		len(imgs.Images[0].BlockDeviceMappings) != 1 {
		t.Fatalf("DescribeImages: %+v %v", imgs, err)
	}
	kp, err := c.EC2.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String("demo")})
	if err != nil || !strings.Contains(aws.ToString(kp.KeyMaterial), "PRIVATE KEY") || aws.ToString(kp.KeyPairId) == "" {
		t.Fatalf("CreateKeyPair: %+v %v", kp, err)
	}
	if _, err := c.EC2.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String("demo")}); apiCode(err) != "InvalidKeyPair.Duplicate" {
		t.Fatalf("duplicate key: %v", err)
	}
	run, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{
		ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Micro, KeyName: aws.String("demo"),
		MinCount: aws.Int32(2), MaxCount: aws.Int32(2),
		UserData: aws.String(base64.StdEncoding.EncodeToString([]byte("#!/bin/sh\necho hi\n"))),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeInstance,
			Tags: []types.Tag{{Key: aws.String("Name"), Value: aws.String("web")}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Instances) != 2 || run.Instances[0].State.Name != types.InstanceStateNamePending ||
		aws.ToString(run.Instances[0].PrivateIpAddress) == "" || len(run.Instances[0].Tags) != 1 {
		t.Fatalf("RunInstances: %+v", run.Instances)
	}
	ids := []string{*run.Instances[0].InstanceId, *run.Instances[1].InstanceId}
	w := ec2.NewInstanceRunningWaiter(c.EC2, func(o *ec2.InstanceRunningWaiterOptions) {
		o.MinDelay, o.MaxDelay = 50*time.Millisecond, 200*time.Millisecond
	})
	if err := w.Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids}, 30*time.Second); err != nil {
		t.Fatalf("InstanceRunning waiter: %v", err)
	}
	out, err := c.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{
		{Name: aws.String("instance-state-name"), Values: []string{"running"}},
		{Name: aws.String("tag:Name"), Values: []string{"w?b"}},
		{Name: aws.String("key-name"), Values: []string{"demo"}},
	}})
	if err != nil || len(out.Reservations) != 1 || len(out.Reservations[0].Instances) != 2 {
		t.Fatalf("filtered describe: %+v %v", out, err)
	}
	inst := out.Reservations[0].Instances[0]
	if inst.Placement == nil || aws.ToString(inst.Placement.AvailabilityZone) == "" || len(inst.NetworkInterfaces) != 1 ||
		inst.MetadataOptions == nil || inst.MetadataOptions.HttpTokens != types.HttpTokensStateRequired {
		t.Fatalf("instance shape: %+v", inst)
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		con, err := c.EC2.GetConsoleOutput(ctx, &ec2.GetConsoleOutputInput{InstanceId: aws.String(ids[0])})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := base64.StdEncoding.DecodeString(aws.ToString(con.Output))
		if strings.Contains(string(b), "CLIPPER-GUEST-READY") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("console: %q", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	st, err := c.EC2.DescribeInstanceStatus(ctx, &ec2.DescribeInstanceStatusInput{InstanceIds: ids})
	if err != nil || len(st.InstanceStatuses) != 2 || st.InstanceStatuses[0].InstanceStatus.Status != types.SummaryStatusOk {
		t.Fatalf("DescribeInstanceStatus: %+v %v", st, err)
	}

	stop, err := c.EC2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: ids[:1]})
	if err != nil || stop.StoppingInstances[0].CurrentState.Name != types.InstanceStateNameStopping ||
		stop.StoppingInstances[0].PreviousState.Name != types.InstanceStateNameRunning {
		t.Fatalf("StopInstances: %+v %v", stop, err)
	}
	c.WaitState(t, ids[0], types.InstanceStateNameStopped, 10*time.Second)
	if _, err := c.EC2.RebootInstances(ctx, &ec2.RebootInstancesInput{InstanceIds: ids[:1]}); apiCode(err) != "IncorrectInstanceState" {
		t.Fatalf("reboot stopped: %v", err)
	}
	if _, err := c.EC2.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: ids[:1]}); err != nil {
		t.Fatal(err)
	}
	c.WaitState(t, ids[0], types.InstanceStateNameRunning, 10*time.Second)
	if _, err := c.EC2.RebootInstances(ctx, &ec2.RebootInstancesInput{InstanceIds: ids}); err != nil {
		t.Fatal(err)
	}

	if _, err := c.EC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{ids[1], ami},
		Tags: []types.Tag{{Key: aws.String("env"), Value: aws.String("test")}}}); err != nil {
		t.Fatal(err)
	}
	tags, err := c.EC2.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []types.Filter{{Name: aws.String("key"), Values: []string{"env"}}}})
	if err != nil || len(tags.Tags) != 2 {
		t.Fatalf("DescribeTags: %+v %v", tags, err)
	}
	if _, err := c.EC2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{ami}, Tags: []types.Tag{{Key: aws.String("env")}}}); err != nil {
		t.Fatal(err)
	}

	term, err := c.EC2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: ids})
	if err != nil || len(term.TerminatingInstances) != 2 {
		t.Fatalf("TerminateInstances: %+v %v", term, err)
	}
	tw := ec2.NewInstanceTerminatedWaiter(c.EC2, func(o *ec2.InstanceTerminatedWaiterOptions) {
		o.MinDelay, o.MaxDelay = 50*time.Millisecond, 200*time.Millisecond
	})
	if err := tw.Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids}, 30*time.Second); err != nil {
		t.Fatalf("InstanceTerminated waiter: %v", err)
	}
	if _, err := c.EC2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(ami)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.EC2.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String("demo")}); err != nil {
		t.Fatal(err)
	}
	keys, err := c.EC2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{})
	if err != nil || len(keys.KeyPairs) != 0 {
		t.Fatalf("DescribeKeyPairs after delete: %+v %v", keys, err)
	}
}

func TestCatalog(t *testing.T) {
	c := cloud.Start(t, cloud.Options{})
	ctx := context.Background()
	regs, err := c.EC2.DescribeRegions(ctx, &ec2.DescribeRegionsInput{})
	if err != nil || len(regs.Regions) != 1 || aws.ToString(regs.Regions[0].Endpoint) != c.Ctrl.APIURL() {
		t.Fatalf("DescribeRegions: %+v %v", regs, err)
	}
	azs, err := c.EC2.DescribeAvailabilityZones(ctx, &ec2.DescribeAvailabilityZonesInput{})
	if err != nil || len(azs.AvailabilityZones) != 1 || azs.AvailabilityZones[0].State != types.AvailabilityZoneStateAvailable {
		t.Fatalf("DescribeAvailabilityZones: %+v %v", azs, err)
	}
	its, err := c.EC2.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{InstanceTypes: []types.InstanceType{types.InstanceTypeT3Micro}})
	if err != nil || len(its.InstanceTypes) != 1 || aws.ToInt32(its.InstanceTypes[0].VCpuInfo.DefaultVCpus) != 2 ||
		aws.ToInt64(its.InstanceTypes[0].MemoryInfo.SizeInMiB) != 1024 || aws.ToBool(its.InstanceTypes[0].BurstablePerformanceSupported) {
		t.Fatalf("DescribeInstanceTypes: %+v %v", its, err)
	}
	attrs, err := c.EC2.DescribeAccountAttributes(ctx, &ec2.DescribeAccountAttributesInput{})
	if err != nil || len(attrs.AccountAttributes) < 4 {
		t.Fatalf("DescribeAccountAttributes: %+v %v", attrs, err)
	}
	if _, err := c.EC2.DescribeVpcEndpoints(ctx, &ec2.DescribeVpcEndpointsInput{}); apiCode(err) != "UnsupportedOperation" {
		t.Fatalf("unimplemented action: %v", err)
	}
}

func TestErrors(t *testing.T) {
	c := cloud.Start(t, cloud.Options{})
	ctx := context.Background()
	_, err := c.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{"i-0123456789abcdef0"}})
	if apiCode(err) != "InvalidInstanceID.NotFound" {
		t.Fatalf("unknown instance: %v", err)
	}
	_, err = c.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{"bogus"}})
	if apiCode(err) != "InvalidInstanceID.Malformed" {
		t.Fatalf("malformed instance: %v", err)
	}
	_, err = c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String("ami-0123456789abcdef0"), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if apiCode(err) != "InvalidAMIID.NotFound" {
		t.Fatalf("unknown image: %v", err)
	}
	_, err = c.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{DryRun: aws.Bool(true)})
	if apiCode(err) != "DryRunOperation" {
		t.Fatalf("dry run: %v", err)
	}
	key := c.Ctrl.Credentials()
	bad := ec2.New(ec2.Options{Region: "clipper-1", BaseEndpoint: aws.String(c.Ctrl.APIURL()), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider(key.ID, "wrong-secret", "")})
	if _, err := bad.DescribeInstances(ctx, &ec2.DescribeInstancesInput{}); apiCode(err) != "AuthFailure" {
		t.Fatalf("wrong secret: %v", err)
	}
	resp, err := http.Get(c.Ctrl.APIURL() + "/?Action=DescribeInstances")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("unsigned request: %d", resp.StatusCode)
	}
}

func TestClientTokenAndPaging(t *testing.T) {
	c := cloud.Start(t, cloud.Options{})
	ctx := context.Background()
	ami := c.ImportImage(t, "guest")
	in := &ec2.RunInstancesInput{ImageId: aws.String(ami), MinCount: aws.Int32(5), MaxCount: aws.Int32(5), ClientToken: aws.String("tok-1")}
	a, err := c.EC2.RunInstances(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.EC2.RunInstances(ctx, in)
	if err != nil || *a.ReservationId != *b.ReservationId || *a.Instances[0].InstanceId != *b.Instances[0].InstanceId {
		t.Fatalf("retry with the same token launched anew: %v", err)
	}
	for range 4 {
		if _, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), MinCount: aws.Int32(5), MaxCount: aws.Int32(5)}); err != nil {
			t.Fatal(err)
		}
	}
	p := ec2.NewDescribeInstancesPaginator(c.EC2, &ec2.DescribeInstancesInput{MaxResults: aws.Int32(5)})
	seen, pages := map[string]bool{}, 0
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		n := 0
		for _, r := range out.Reservations {
			for _, i := range r.Instances {
				if seen[*i.InstanceId] {
					t.Fatalf("%s on two pages", *i.InstanceId)
				}
				seen[*i.InstanceId] = true
				n++
			}
		}
		if n > 5 {
			t.Fatalf("page of %d", n)
		}
	}
	if len(seen) != 25 || pages != 5 {
		t.Fatalf("%d instances on %d pages, want 25 on 5", len(seen), pages)
	}
	_, err = c.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{MaxResults: aws.Int32(5), InstanceIds: []string{*a.Instances[0].InstanceId}})
	if apiCode(err) != "InvalidParameterCombination" {
		t.Fatalf("MaxResults with IDs: %v", err)
	}
}

// TestAgentRestartKeepsVMs stops the agent, terminates one of its two
// instances while it is away, restarts it over the same driver state, and
// checks the reconciliation: the instance the controller still wants was
// neither restarted nor duplicated, the terminated one's VM is deleted.
func TestAgentRestartKeepsVMs(t *testing.T) {
	c := cloud.Start(t, cloud.Options{})
	ctx := context.Background()
	ami := c.ImportImage(t, "guest")
	run, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), MinCount: aws.Int32(2), MaxCount: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	keep, gone := *run.Instances[0].InstanceId, *run.Instances[1].InstanceId
	c.WaitState(t, keep, types.InstanceStateNameRunning, 10*time.Second)
	c.WaitState(t, gone, types.InstanceStateNameRunning, 10*time.Second)
	n := c.Nodes[0]
	before, err := n.Driver.Status(ctx, keep)
	if err != nil {
		t.Fatal(err)
	}
	n.Stop()
	// While the agent is away, the user terminates one instance: it waits
	// in shutting-down for its node to say the VM is gone.
	term, err := c.EC2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{gone}})
	if err != nil || term.TerminatingInstances[0].CurrentState.Name != types.InstanceStateNameShuttingDown {
		t.Fatalf("terminate while the agent is away: %+v %v", term, err)
	}
	if _, err := n.Driver.Status(ctx, gone); err != nil {
		t.Fatalf("the VM of %s went before its agent came back: %v", gone, err)
	}
	c.Nodes[0] = c.StartNode(t, "node1", n.Driver, n.Dir)
	after, err := n.Driver.Status(ctx, keep)
	if err != nil || after.PID != before.PID || !after.StartedAt.Equal(before.StartedAt) {
		t.Fatalf("VM changed across agent restart: %+v -> %+v (%v)", before, after, err)
	}
	c.WaitState(t, keep, types.InstanceStateNameRunning, 5*time.Second)
	c.WaitState(t, gone, types.InstanceStateNameTerminated, 5*time.Second)
	vms, _ := n.Driver.List(ctx)
	if len(vms) != 1 || vms[0].ID != keep {
		t.Fatalf("driver has %+v, want only %s", vms, keep)
	}
}
