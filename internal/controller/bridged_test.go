package controller_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/clipper-cloud/clipper/internal/api"
	"github.com/clipper-cloud/clipper/internal/client"
	"github.com/clipper-cloud/clipper/internal/testutil/cloud"
)

func createNetwork(ctx context.Context, c *client.Client, req api.NetworkRequest) (api.NetworkInfo, error) {
	body, _ := json.Marshal(req)
	sum := sha256.Sum256(body)
	var n api.NetworkInfo
	err := c.Do(ctx, "POST", api.Prefix+"networks", bytes.NewReader(body), int64(len(body)), hex.EncodeToString(sum[:]), &n)
	return n, err
}

// TestBridgedNetwork: the operator creates a bridged network through the
// native API; EC2 shows it as a VPC and subnet; instances launched into it
// get addresses from its range, and the node is told the uplink and the
// LAN's router; the range runs out cleanly; the network cannot be deleted
// while instances use it.
func TestBridgedNetwork(t *testing.T) {
	c := cloud.Start(t, cloud.Options{})
	ctx := context.Background()
	for _, bad := range []api.NetworkRequest{
		{Bridge: "br0", CIDR: "192.168.1.0/24", Gateway: "192.168.1.1", Range: "192.168.1.1-192.168.1.10"},   // holds the gateway
		{Bridge: "br0", CIDR: "192.168.1.0/24", Gateway: "10.0.0.1", Range: "192.168.1.10-192.168.1.12"},     // gateway outside
		{Bridge: "br0", CIDR: "192.168.1.0/24", Gateway: "192.168.1.1", Range: "192.168.1.12-192.168.1.10"},  // backwards
		{Bridge: "br0", CIDR: "192.168.1.7/24", Gateway: "192.168.1.1", Range: "192.168.1.10-192.168.1.12"},  // not a network
		{Bridge: "a/b", CIDR: "192.168.1.0/24", Gateway: "192.168.1.1", Range: "192.168.1.10-192.168.1.12"},  // not a name
		{Bridge: "br0", CIDR: "192.168.1.0/24", Gateway: "192.168.1.1", Range: "192.168.1.10-192.168.1.255"}, // broadcast
	} {
		if _, err := createNetwork(ctx, c.Client, bad); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
	n, err := createNetwork(ctx, c.Client, api.NetworkRequest{Name: "lan", Bridge: "br0", CIDR: "192.168.1.0/24",
		Gateway: "192.168.1.1", Range: "192.168.1.100-192.168.1.102"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := createNetwork(ctx, c.Client, api.NetworkRequest{Bridge: "br0", CIDR: "192.168.1.0/24",
		Gateway: "192.168.1.1", Range: "192.168.1.102-192.168.1.110"}); err == nil {
		t.Fatal("accepted a range overlapping another network's on the same bridge")
	}
	vpcs, err := c.EC2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{VpcIds: []string{n.VPCID}})
	if err != nil || len(vpcs.Vpcs) != 1 || aws.ToBool(vpcs.Vpcs[0].IsDefault) || aws.ToString(vpcs.Vpcs[0].CidrBlock) != "192.168.1.0/24" {
		t.Fatalf("DescribeVpcs: %+v %v", vpcs, err)
	}
	subs, err := c.EC2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []types.Filter{{Name: aws.String("tag:Name"), Values: []string{"lan"}}}})
	if err != nil || len(subs.Subnets) != 1 || aws.ToString(subs.Subnets[0].SubnetId) != n.SubnetID ||
		aws.ToInt32(subs.Subnets[0].AvailableIpAddressCount) != 3 {
		t.Fatalf("DescribeSubnets: %+v %v", subs, err)
	}

	ami := c.ImportImage(t, "guest")
	run, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), SubnetId: aws.String(n.SubnetID),
		MinCount: aws.Int32(3), MaxCount: aws.Int32(3)})
	if err != nil {
		t.Fatal(err)
	}
	lo, hi := netip.MustParseAddr("192.168.1.100"), netip.MustParseAddr("192.168.1.102")
	var ids []string
	for _, i := range run.Instances {
		ip := netip.MustParseAddr(aws.ToString(i.PrivateIpAddress))
		if ip.Less(lo) || hi.Less(ip) || aws.ToString(i.VpcId) != n.VPCID {
			t.Fatalf("instance %s at %s in %s", aws.ToString(i.InstanceId), ip, aws.ToString(i.VpcId))
		}
		ids = append(ids, aws.ToString(i.InstanceId))
	}
	if _, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), SubnetId: aws.String(n.SubnetID),
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1)}); apiCode(err) != "InsufficientFreeAddressesInSubnet" {
		t.Fatalf("a fourth instance in a range of three: %v", err)
	}
	nodes, _, err := c.Ctrl.Service().Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.Ctrl.Service().NodeDesired(ctx, nodes[0].ID, 0)
	if err != nil || len(d.Instances) != 3 {
		t.Fatalf("desired: %+v %v", d, err)
	}
	for _, di := range d.Instances {
		if di.Network.Uplink != "br0" || di.Network.Gateway != "192.168.1.1/24" || di.Network.DNS != "192.168.1.1" {
			t.Fatalf("the node is told %+v", di.Network)
		}
	}
	for _, id := range ids {
		c.WaitState(t, id, types.InstanceStateNameRunning, 10*time.Second)
	}

	del := func() error {
		return c.Client.Do(ctx, "DELETE", api.Prefix+"networks/"+n.VPCID, nil, 0, emptyHash, nil)
	}
	if err := del(); err == nil {
		t.Fatal("deleted a network with running instances")
	}
	if _, err := c.EC2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: ids}); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		c.WaitState(t, id, types.InstanceStateNameTerminated, 10*time.Second)
	}
	if err := del(); err != nil {
		t.Fatalf("delete: %v", err)
	}
	var left []api.NetworkInfo
	if err := c.Client.Do(ctx, "GET", api.Prefix+"networks", nil, 0, emptyHash, &left); err != nil || len(left) != 0 {
		t.Fatalf("after delete: %+v %v", left, err)
	}
	if _, err := c.EC2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{VpcIds: []string{n.VPCID}}); apiCode(err) != "InvalidVpcID.NotFound" {
		t.Fatalf("the deleted VPC: %v", err)
	}
}

// emptyHash is the SHA-256 of an empty body.
const emptyHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
