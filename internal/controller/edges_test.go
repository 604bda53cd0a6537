package controller_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/testutil/cloud"
)

// TestInvalidAction: a signed request for an action EC2 does not have gets
// InvalidAction and a 400, one EC2 has and Clipper does not UnsupportedOperation.
func TestInvalidAction(t *testing.T) {
	c := cloud.Start(t, cloud.Options{})
	for _, tc := range []struct {
		action, code string
	}{{"Frobnicate", "InvalidAction"}, {"CreateVpcEndpoint", "UnsupportedOperation"}} {
		status, body := signedGet(t, c, tc.action, "")
		if status != http.StatusBadRequest || !strings.Contains(body, "<Code>"+tc.code+"</Code>") {
			t.Errorf("%s: %d %s, want 400 %s", tc.action, status, body, tc.code)
		}
	}
}

// TestRegisterImageWithSDK registers an uploaded image through the SDK's
// own RegisterImage and reads it back with DescribeImages.
func TestRegisterImageWithSDK(t *testing.T) {
	c := cloud.Start(t, cloud.Options{})
	ctx := context.Background()
	kernel, err := c.Client.UploadFile(ctx, writeFile(t, "vmlinux", "not really a kernel"))
	if err != nil {
		t.Fatal(err)
	}
	loc, err := c.Client.UploadManifest(ctx, model.ImageManifest{Kernel: kernel, Machine: "microvm"})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := c.EC2.RegisterImage(ctx, &ec2.RegisterImageInput{Name: aws.String("sdk-image"), ImageLocation: aws.String(loc),
		Description: aws.String("registered by the SDK")})
	if err != nil || !strings.HasPrefix(aws.ToString(reg.ImageId), "ami-") {
		t.Fatalf("RegisterImage: %+v %v", reg, err)
	}
	imgs, err := c.EC2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{aws.ToString(reg.ImageId)}})
	if err != nil || len(imgs.Images) != 1 || aws.ToString(imgs.Images[0].Name) != "sdk-image" || imgs.Images[0].State != types.ImageStateAvailable {
		t.Fatalf("DescribeImages: %+v %v", imgs, err)
	}
	if _, err := c.EC2.RegisterImage(ctx, &ec2.RegisterImageInput{Name: aws.String("sdk-image"), ImageLocation: aws.String(loc)}); apiCode(err) == "" {
		t.Fatal("a second image of the same name was registered")
	}
}

// TestBurstPlacement: a burst of 500 is placed in one transaction, all or
// nothing: with room for 300 (memory), MinCount=500 launches nothing and
// the error says what was short; MinCount=1 launches the 300 in one
// reservation, spread over both nodes.
func TestBurstPlacement(t *testing.T) {
	// 100 GiB a node, overcommitted 1.5 times: 150 instances of 1 GiB.
	c := cloud.Start(t, cloud.Options{Nodes: 2, Capacity: model.Capacity{VCPUs: 64, MemoryMiB: 100 << 10, DiskMiB: 1 << 30}})
	ctx := context.Background()
	ami := c.ImportImage(t, "guest")
	_, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Micro,
		MinCount: aws.Int32(500), MaxCount: aws.Int32(500)})
	if apiCode(err) != "InsufficientInstanceCapacity" || !strings.Contains(err.Error(), "short of memory") ||
		!strings.Contains(err.Error(), "room for 300") {
		t.Fatalf("500 where 300 fit: %v", err)
	}
	desc, err := c.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	if err != nil || len(desc.Reservations) != 0 {
		t.Fatalf("a refused burst left instances: %+v %v", desc.Reservations, err)
	}
	run, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Micro,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(500)})
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Instances) != 300 {
		t.Fatalf("launched %d, want the 300 that fit", len(run.Instances))
	}
	per := map[string]int{}
	for _, n := range listNodes(t, c) {
		per[n.Name] = n.Used.MemoryMiB / 1024
	}
	if per["node1"] != 150 || per["node2"] != 150 {
		t.Fatalf("memory used per node (GiB): %v, want 150 each", per)
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
