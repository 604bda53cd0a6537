package controller_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/crypto/ssh"

	"github.com/clipper-cloud/clipper/internal/compute"
	"github.com/clipper-cloud/clipper/internal/compute/fake"
	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/service"
	"github.com/clipper-cloud/clipper/internal/sigv4"
	"github.com/clipper-cloud/clipper/internal/testutil/cloud"
)

// TestImportKeyPairAndTags: an imported OpenSSH key with tags, through the
// SDK's decoders; filters on name, type and tag.
func TestImportKeyPairAndTags(t *testing.T) {
	c := cloud.Start(t, cloud.Options{})
	ctx := context.Background()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	imp, err := c.EC2.ImportKeyPair(ctx, &ec2.ImportKeyPairInput{KeyName: aws.String("laptop"),
		PublicKeyMaterial: ssh.MarshalAuthorizedKey(spub),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeKeyPair,
			Tags: []types.Tag{{Key: aws.String("owner"), Value: aws.String("ana")}}}}})
	if err != nil || aws.ToString(imp.KeyName) != "laptop" || !strings.HasPrefix(aws.ToString(imp.KeyPairId), "key-") ||
		aws.ToString(imp.KeyFingerprint) == "" || len(imp.Tags) != 1 {
		t.Fatalf("ImportKeyPair: %+v %v", imp, err)
	}
	if _, err := c.EC2.ImportKeyPair(ctx, &ec2.ImportKeyPairInput{KeyName: aws.String("bad"),
		PublicKeyMaterial: []byte("ssh-rsa not-base64")}); apiCode(err) != "InvalidKey.Format" {
		t.Fatalf("malformed public key: %v", err)
	}
	if _, err := c.EC2.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String("other")}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []types.Filter{
		{Name: aws.String("tag:owner"), Values: []string{"ana"}},
		{Name: aws.String("key-type"), Values: []string{"ed25519"}},
		{Name: aws.String("key-name"), Values: []string{"lap*"}},
	} {
		out, err := c.EC2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{Filters: []types.Filter{f}})
		if err != nil || len(out.KeyPairs) != 1 || aws.ToString(out.KeyPairs[0].KeyName) != "laptop" ||
			len(out.KeyPairs[0].Tags) != 1 || aws.ToString(out.KeyPairs[0].KeyFingerprint) != aws.ToString(imp.KeyFingerprint) {
			t.Fatalf("DescribeKeyPairs %s: %+v %v", *f.Name, out, err)
		}
	}
	tags, err := c.EC2.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []types.Filter{{Name: aws.String("resource-type"), Values: []string{"key-pair"}}}})
	if err != nil || len(tags.Tags) != 1 || aws.ToString(tags.Tags[0].ResourceId) != aws.ToString(imp.KeyPairId) {
		t.Fatalf("DescribeTags key-pair: %+v %v", tags, err)
	}
}

// ids collects the instance IDs of a DescribeInstances answer, sorted.
func ids(out *ec2.DescribeInstancesOutput) []string {
	var s []string
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			s = append(s, aws.ToString(i.InstanceId))
		}
	}
	slices.Sort(s)
	return s
}

// TestDescribeFilters checks every DescribeInstances filter the walking
// skeleton names, and DescribeImages filters, through the SDK.
func TestDescribeFilters(t *testing.T) {
	c := cloud.Start(t, cloud.Options{Service: func(sc *service.Config) { sc.Zones = []string{"clipper-1a", "clipper-1b"} }})
	ctx := context.Background()
	ami := c.ImportImage(t, "guest")
	other := c.ImportImage(t, "other")
	if _, err := c.EC2.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String("k")}); err != nil {
		t.Fatal(err)
	}
	// The single node is in the first zone: the second zone has no node,
	// so it is not asked for.
	launch := func(img string, typ types.InstanceType, key string, tags ...string) string {
		t.Helper()
		in := &ec2.RunInstancesInput{ImageId: aws.String(img), InstanceType: typ, MinCount: aws.Int32(1), MaxCount: aws.Int32(1)}
		if key != "" {
			in.KeyName = aws.String(key)
		}
		for i := 0; i < len(tags); i += 2 {
			in.TagSpecifications = append(in.TagSpecifications, types.TagSpecification{ResourceType: types.ResourceTypeInstance,
				Tags: []types.Tag{{Key: aws.String(tags[i]), Value: aws.String(tags[i+1])}}})
		}
		out, err := c.EC2.RunInstances(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(out.Instances[0].InstanceId)
	}
	a := launch(ami, types.InstanceTypeT3Micro, "k", "Name", "web")
	b := launch(ami, types.InstanceTypeT3Small, "", "env", "prod")
	d := launch(other, types.InstanceTypeT3Micro, "")
	for _, id := range []string{a, b, d} {
		c.WaitState(t, id, types.InstanceStateNameRunning, 10*time.Second)
	}
	zone := aws.ToString(c.WaitState(t, a, types.InstanceStateNameRunning, time.Second).Placement.AvailabilityZone)
	sorted := func(s ...string) []string { slices.Sort(s); return s }
	for _, tc := range []struct {
		name   string
		values []string
		want   []string
	}{
		{"instance-id", []string{a, d}, sorted(a, d)},
		{"image-id", []string{other}, []string{d}},
		{"instance-type", []string{"t3.small"}, []string{b}},
		{"instance-type", []string{"t3.micro", "t3.small"}, sorted(a, b, d)},
		{"key-name", []string{"k"}, []string{a}},
		{"availability-zone", []string{zone}, sorted(a, b, d)},
		{"availability-zone", []string{"clipper-1b"}, nil},
		{"tag:Name", []string{"web"}, []string{a}},
		{"tag-key", []string{"env"}, []string{b}},
		{"tag-key", []string{"e*"}, []string{b}},
		{"instance-state-name", []string{"running"}, sorted(a, b, d)},
		{"instance-state-code", []string{"16"}, sorted(a, b, d)},
	} {
		out, err := c.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String(tc.name), Values: tc.values}}})
		if err != nil {
			t.Fatalf("%s=%v: %v", tc.name, tc.values, err)
		}
		if got := ids(out); !slices.Equal(got, tc.want) {
			t.Errorf("%s=%v: %v, want %v", tc.name, tc.values, got, tc.want)
		}
	}
	// Two filters are AND.
	out, err := c.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{
		{Name: aws.String("image-id"), Values: []string{ami}}, {Name: aws.String("instance-type"), Values: []string{"t3.micro"}}}})
	if err != nil || !slices.Equal(ids(out), []string{a}) {
		t.Fatalf("image-id AND instance-type: %v %v", ids(out), err)
	}
	if _, err := c.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String("no-such-filter"), Values: []string{"x"}}}}); apiCode(err) != "InvalidParameterValue" {
		t.Fatalf("unknown filter: %v", err)
	}

	for _, tc := range []struct {
		name, value string
		want        []string
	}{
		{"name", "oth*", []string{other}},
		{"image-id", ami, []string{ami}},
		{"state", "available", sorted(ami, other)},
		{"root-device-type", "ebs", sorted(ami, other)},
		{"architecture", "arm64", nil},
	} {
		out, err := c.EC2.DescribeImages(ctx, &ec2.DescribeImagesInput{Filters: []types.Filter{{Name: aws.String(tc.name), Values: []string{tc.value}}}})
		if err != nil {
			t.Fatalf("images %s: %v", tc.name, err)
		}
		var got []string
		for _, img := range out.Images {
			got = append(got, aws.ToString(img.ImageId))
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("images %s=%s: %v, want %v", tc.name, tc.value, got, tc.want)
		}
	}
}

// TestInstanceTypeTable: the operator's table replaces the built-in one;
// launches take its sizes; unknown types are refused.
func TestInstanceTypeTable(t *testing.T) {
	table := []model.InstanceType{{Name: "tiny.1", VCPUs: 1, MemoryMiB: 256, DiskGiB: 1}, {Name: "big.8", VCPUs: 8, MemoryMiB: 32768, DiskGiB: 40}}
	c := cloud.Start(t, cloud.Options{Service: func(sc *service.Config) { sc.InstanceTypes, sc.DefaultType = table, "tiny.1" }})
	ctx := context.Background()
	out, err := c.EC2.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{})
	if err != nil || len(out.InstanceTypes) != 2 {
		t.Fatalf("DescribeInstanceTypes: %+v %v", out, err)
	}
	got := map[string]types.InstanceTypeInfo{}
	for _, it := range out.InstanceTypes {
		got[string(it.InstanceType)] = it
	}
	big := got["big.8"]
	if aws.ToInt32(big.VCpuInfo.DefaultVCpus) != 8 || aws.ToInt64(big.MemoryInfo.SizeInMiB) != 32768 ||
		big.BurstablePerformanceSupported == nil || *big.BurstablePerformanceSupported {
		t.Fatalf("big.8: %+v", big)
	}
	// The element is on the wire, false, not merely absent.
	body := rawAction(t, c, "DescribeInstanceTypes", "InstanceType.1=tiny.1")
	if !strings.Contains(body, "<burstablePerformanceSupported>false</burstablePerformanceSupported>") {
		t.Fatalf("no burstablePerformanceSupported=false in %s", body)
	}
	ami := c.ImportImage(t, "guest")
	run, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if err != nil || run.Instances[0].InstanceType != "tiny.1" {
		t.Fatalf("default type: %+v %v", run, err)
	}
	id := aws.ToString(run.Instances[0].InstanceId)
	c.WaitState(t, id, types.InstanceStateNameRunning, 10*time.Second)
	if vms, _ := c.Nodes[0].Driver.List(ctx); len(vms) != 1 {
		t.Fatalf("driver VMs: %+v", vms)
	}
	if _, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Micro,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1)}); apiCode(err) != "InvalidParameterValue" {
		t.Fatalf("a type not in the table: %v", err)
	}
}

// rawAction sends a SigV4-signed GET and returns the XML.
func rawAction(t *testing.T, c *cloud.Cloud, action, query string) string {
	t.Helper()
	status, body := signedGet(t, c, action, query)
	if status != http.StatusOK {
		t.Fatalf("%s: %d %s", action, status, body)
	}
	return body
}

// signedGet sends a SigV4-signed GET of an action and returns the status
// and body.
func signedGet(t *testing.T, c *cloud.Cloud, action, query string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/?Action=%s&Version=2016-11-15&%s", c.Ctrl.APIURL(), action, query), nil)
	if err != nil {
		t.Fatal(err)
	}
	key := c.Ctrl.Credentials()
	if err := sigv4.Sign(req, nil, sigv4.Credentials{AccessKeyID: key.ID, SecretAccessKey: key.Secret},
		c.Ctrl.Service().Config().Region, "ec2", time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// failingStart is a driver whose VMs never start, as when QEMU exits at once.
type failingStart struct{ *fake.Driver }

func (failingStart) Start(ctx context.Context, id string) error {
	return fmt.Errorf("qemu exited: status 1: could not load kernel")
}

// TestFailedLaunchSaysWhy: a VM that cannot start ends terminated, and the
// SDK reads a stateReason that says why.
func TestFailedLaunchSaysWhy(t *testing.T) {
	c := cloud.Start(t, cloud.Options{Driver: func(int) compute.Hypervisor { return failingStart{fake.New()} }})
	ctx := context.Background()
	ami := c.ImportImage(t, "guest")
	run, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	inst := c.WaitState(t, aws.ToString(run.Instances[0].InstanceId), types.InstanceStateNameTerminated, 10*time.Second)
	if inst.StateReason == nil || aws.ToString(inst.StateReason.Code) != "Server.InternalError" ||
		!strings.Contains(aws.ToString(inst.StateReason.Message), "could not load kernel") {
		t.Fatalf("stateReason: %+v", inst.StateReason)
	}
	if aws.ToString(inst.PrivateIpAddress) != "" {
		t.Fatalf("a failed launch kept its address %s", aws.ToString(inst.PrivateIpAddress))
	}
}
