package controller_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/clipper-cloud/clipper/internal/service"
	"github.com/clipper-cloud/clipper/internal/testutil/cloud"
)

// TestElasticIPs drives the elastic IP actions through the SDK: allocation
// from the operator's pool, association, moving, the instance's view, the
// node's desired state, and the errors clients depend on.
func TestElasticIPs(t *testing.T) {
	pool := netip.MustParsePrefix("198.51.100.0/29")
	c := cloud.Start(t, cloud.Options{Service: func(cfg *service.Config) {
		cfg.PublicPools = []netip.Prefix{pool}
		cfg.MaxAddresses = 3
	}})
	ctx := context.Background()
	ami := c.ImportImage(t, "guest")
	run, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), MinCount: aws.Int32(2), MaxCount: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	a, b := aws.ToString(run.Instances[0].InstanceId), aws.ToString(run.Instances[1].InstanceId)

	alloc, err := c.EC2.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: types.DomainTypeVpc})
	if err != nil {
		t.Fatal(err)
	}
	ip := aws.ToString(alloc.PublicIp)
	if !pool.Contains(netip.MustParseAddr(ip)) || alloc.Domain != types.DomainTypeVpc {
		t.Fatalf("AllocateAddress: %+v", alloc)
	}
	// A given address of the pool, then the per-account limit.
	if _, err := c.EC2.AllocateAddress(ctx, &ec2.AllocateAddressInput{Address: aws.String(ip)}); apiCode(err) != "InvalidIPAddress.InUse" {
		t.Errorf("allocating a taken address: %v", err)
	}
	if _, err := c.EC2.AllocateAddress(ctx, &ec2.AllocateAddressInput{Address: aws.String("192.0.2.7")}); apiCode(err) != "InvalidParameterValue" {
		t.Errorf("allocating outside the pool: %v", err)
	}
	var extra []string
	for range 2 {
		x, err := c.EC2.AllocateAddress(ctx, &ec2.AllocateAddressInput{})
		if err != nil {
			t.Fatal(err)
		}
		extra = append(extra, aws.ToString(x.AllocationId))
	}
	if _, err := c.EC2.AllocateAddress(ctx, &ec2.AllocateAddressInput{}); apiCode(err) != "AddressLimitExceeded" {
		t.Errorf("fourth address: %v", err)
	}

	assoc, err := c.EC2.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: alloc.AllocationId, InstanceId: aws.String(a)})
	if err != nil {
		t.Fatal(err)
	}
	publicIP := func(id string) string {
		t.Helper()
		out, err := c.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil {
			t.Fatal(err)
		}
		i := out.Reservations[0].Instances[0]
		if got := aws.ToString(i.PublicIpAddress); got != "" {
			if len(i.NetworkInterfaces) != 1 || i.NetworkInterfaces[0].Association == nil ||
				aws.ToString(i.NetworkInterfaces[0].Association.PublicIp) != got {
				t.Errorf("%s: ipAddress %s without the interface's association", id, got)
			}
		}
		return aws.ToString(i.PublicIpAddress)
	}
	if got := publicIP(a); got != ip {
		t.Fatalf("instance a shows public address %q, want %s", got, ip)
	}
	byIP, err := c.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String("ip-address"), Values: []string{ip}}}})
	if err != nil || len(byIP.Reservations) != 1 {
		t.Errorf("ip-address filter: %+v %v", byIP, err)
	}
	// The node hosting a is told to carry the address.
	svc := c.Ctrl.Service()
	nodes, _, err := svc.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d, err := svc.NodeDesired(ctx, nodes[0].ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, di := range d.Instances {
		want := ""
		if di.ID == a {
			want = ip
		}
		if di.Network.PublicIP != want || di.Metadata.PublicIPv4 != want {
			t.Errorf("%s: desired public IP %q (metadata %q), want %q", di.ID, di.Network.PublicIP, di.Metadata.PublicIPv4, want)
		}
		if di.Network.VNI == 0 || di.Network.GatewayMAC == "" {
			t.Errorf("%s: no VNI or gateway MAC: %+v", di.ID, di.Network)
		}
	}

	// Moving needs AllowReassociation; then b has it and a has none.
	if _, err := c.EC2.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: alloc.AllocationId, InstanceId: aws.String(b)}); apiCode(err) != "Resource.AlreadyAssociated" {
		t.Errorf("moving without AllowReassociation: %v", err)
	}
	moved, err := c.EC2.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: alloc.AllocationId, InstanceId: aws.String(b),
		AllowReassociation: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(moved.AssociationId) == aws.ToString(assoc.AssociationId) {
		t.Error("a move kept the association ID")
	}
	if publicIP(a) != "" || publicIP(b) != ip {
		t.Errorf("after the move: a %q, b %q", publicIP(a), publicIP(b))
	}
	desc, err := c.EC2.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{Filters: []types.Filter{{Name: aws.String("instance-id"), Values: []string{b}}}})
	if err != nil || len(desc.Addresses) != 1 || aws.ToString(desc.Addresses[0].AssociationId) != aws.ToString(moved.AssociationId) ||
		aws.ToString(desc.Addresses[0].PrivateIpAddress) != aws.ToString(run.Instances[1].PrivateIpAddress) {
		t.Fatalf("DescribeAddresses by instance: %+v %v", desc, err)
	}
	attr, err := c.EC2.DescribeAddressesAttribute(ctx, &ec2.DescribeAddressesAttributeInput{AllocationIds: []string{aws.ToString(alloc.AllocationId)},
		Attribute: types.AddressAttributeNameDomainName})
	if err != nil || len(attr.Addresses) != 1 || aws.ToString(attr.Addresses[0].PublicIp) != ip {
		t.Errorf("DescribeAddressesAttribute: %+v %v", attr, err)
	}

	// Release needs a disassociated address.
	if _, err := c.EC2.ReleaseAddress(ctx, &ec2.ReleaseAddressInput{AllocationId: alloc.AllocationId}); apiCode(err) != "InvalidIPAddress.InUse" {
		t.Errorf("releasing an associated address: %v", err)
	}
	if _, err := c.EC2.DisassociateAddress(ctx, &ec2.DisassociateAddressInput{AssociationId: aws.String("eipassoc-0123456789abcdef0")}); apiCode(err) != "InvalidAssociationID.NotFound" {
		t.Errorf("unknown association: %v", err)
	}
	if _, err := c.EC2.DisassociateAddress(ctx, &ec2.DisassociateAddressInput{AssociationId: moved.AssociationId}); err != nil {
		t.Fatal(err)
	}
	if publicIP(b) != "" {
		t.Error("b kept the address after DisassociateAddress")
	}
	if _, err := c.EC2.ReleaseAddress(ctx, &ec2.ReleaseAddressInput{AllocationId: alloc.AllocationId}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{aws.ToString(alloc.AllocationId), "eipalloc-0123456789abcdef0"} {
		if _, err := c.EC2.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{id}}); apiCode(err) != "InvalidAllocationID.NotFound" {
			t.Errorf("describing %s: %v", id, err)
		}
	}
	if _, err := c.EC2.ReleaseAddress(ctx, &ec2.ReleaseAddressInput{AllocationId: aws.String("eipalloc-nothex")}); apiCode(err) != "InvalidAllocationID.Malformed" {
		t.Errorf("malformed allocation ID: %v", err)
	}

	// Terminating an instance frees its address for others.
	if _, err := c.EC2.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: aws.String(extra[0]), InstanceId: aws.String(a)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.EC2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{a}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		out, err := c.EC2.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{extra[0]}})
		return err == nil && len(out.Addresses) == 1 && out.Addresses[0].InstanceId == nil
	})
}

// waitFor polls cond for up to ten seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met after 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
