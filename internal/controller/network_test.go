package controller_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/service"
	"github.com/clipper-cloud/clipper/internal/testutil/cloud"
)

// TestDefaultNetwork: a default VPC, one default subnet per zone, and
// instances placed in it with addresses and interfaces.
func TestDefaultNetwork(t *testing.T) {
	c := cloud.Start(t, cloud.Options{Service: func(sc *service.Config) { sc.Zones = []string{"clipper-1a", "clipper-1b"} }})
	ctx := context.Background()
	vpcs, err := c.EC2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: []types.Filter{{Name: aws.String("is-default"), Values: []string{"true"}}}})
	if err != nil || len(vpcs.Vpcs) != 1 || !aws.ToBool(vpcs.Vpcs[0].IsDefault) || aws.ToString(vpcs.Vpcs[0].CidrBlock) != "172.31.0.0/16" {
		t.Fatalf("DescribeVpcs: %+v %v", vpcs, err)
	}
	subnets, err := c.EC2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{})
	if err != nil || len(subnets.Subnets) != 2 || !aws.ToBool(subnets.Subnets[0].DefaultForAz) {
		t.Fatalf("DescribeSubnets: %+v %v", subnets, err)
	}
	ami := c.ImportImage(t, "guest")
	run, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		PrivateIpAddress: aws.String("172.31.0.77")})
	if err != nil {
		t.Fatal(err)
	}
	i := run.Instances[0]
	if aws.ToString(i.VpcId) != aws.ToString(vpcs.Vpcs[0].VpcId) || aws.ToString(i.PrivateIpAddress) != "172.31.0.77" ||
		len(i.SecurityGroups) != 1 || aws.ToString(i.SecurityGroups[0].GroupName) != "default" {
		t.Fatalf("instance network: %+v", i)
	}
	if _, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		PrivateIpAddress: aws.String("172.31.0.77")}); apiCode(err) != "InvalidIPAddress.InUse" {
		t.Fatalf("address in use: %v", err)
	}
}

// TestSecurityGroupAPI walks the EC2 security group calls through the SDK.
func TestSecurityGroupAPI(t *testing.T) {
	c := cloud.Start(t, cloud.Options{})
	ctx := context.Background()
	web, err := c.EC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("web"), Description: aws.String("web servers")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.EC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("web"), Description: aws.String("again")}); apiCode(err) != "InvalidGroup.Duplicate" {
		t.Fatalf("duplicate group: %v", err)
	}
	// Terraform's first step: revoke the default allow-all egress.
	allOut := []types.IpPermission{{IpProtocol: aws.String("-1"), IpRanges: []types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}}}
	if _, err := c.EC2.RevokeSecurityGroupEgress(ctx, &ec2.RevokeSecurityGroupEgressInput{GroupId: web.GroupId, IpPermissions: allOut}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.EC2.RevokeSecurityGroupEgress(ctx, &ec2.RevokeSecurityGroupEgressInput{GroupId: web.GroupId, IpPermissions: allOut}); apiCode(err) != "InvalidPermission.NotFound" {
		t.Fatalf("revoke twice: %v", err)
	}
	perm := types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(80), ToPort: aws.Int32(80),
		IpRanges: []types.IpRange{{CidrIp: aws.String("10.0.0.0/8"), Description: aws.String("lan")}, {CidrIp: aws.String("192.168.0.0/16")}}}
	auth, err := c.EC2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: web.GroupId, IpPermissions: []types.IpPermission{perm}})
	if err != nil || len(auth.SecurityGroupRules) != 2 {
		t.Fatalf("authorize: %+v %v", auth, err)
	}
	if _, err := c.EC2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: web.GroupId, IpPermissions: []types.IpPermission{perm}}); apiCode(err) != "InvalidPermission.Duplicate" {
		t.Fatalf("authorize twice: %v", err)
	}
	def, err := c.EC2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupNames: []string{"default"}})
	if err != nil || len(def.SecurityGroups) != 1 {
		t.Fatalf("default group: %+v %v", def, err)
	}
	srcPerm := types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(22), ToPort: aws.Int32(22),
		UserIdGroupPairs: []types.UserIdGroupPair{{GroupId: def.SecurityGroups[0].GroupId}}}
	if _, err := c.EC2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: web.GroupId, IpPermissions: []types.IpPermission{srcPerm}}); err != nil {
		t.Fatal(err)
	}
	got, err := c.EC2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{*web.GroupId}})
	if err != nil || len(got.SecurityGroups) != 1 {
		t.Fatal(err)
	}
	g := got.SecurityGroups[0]
	if len(g.IpPermissions) != 2 || len(g.IpPermissionsEgress) != 0 || len(g.IpPermissions[0].IpRanges) != 2 ||
		aws.ToInt32(g.IpPermissions[0].FromPort) != 80 || len(g.IpPermissions[1].UserIdGroupPairs) != 1 {
		t.Fatalf("permissions: %+v", g)
	}
	rules, err := c.EC2.DescribeSecurityGroupRules(ctx, &ec2.DescribeSecurityGroupRulesInput{Filters: []types.Filter{{Name: aws.String("group-id"), Values: []string{*web.GroupId}}}})
	if err != nil || len(rules.SecurityGroupRules) != 3 {
		t.Fatalf("rules: %+v %v", rules, err)
	}
	// The default group cannot go; a group in use cannot go either.
	if _, err := c.EC2.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: def.SecurityGroups[0].GroupId}); apiCode(err) != "CannotDelete" {
		t.Fatalf("delete default: %v", err)
	}
	ami := c.ImportImage(t, "guest")
	run, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		SecurityGroupIds: []string{*web.GroupId}})
	if err != nil {
		t.Fatal(err)
	}
	id := *run.Instances[0].InstanceId
	if _, err := c.EC2.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: web.GroupId}); apiCode(err) != "DependencyViolation" {
		t.Fatalf("delete in use: %v", err)
	}
	// Move the instance to the default group while it runs.
	c.WaitState(t, id, types.InstanceStateNameRunning, 10*time.Second)
	if _, err := c.EC2.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: aws.String(id), Groups: []string{*def.SecurityGroups[0].GroupId}}); err != nil {
		t.Fatal(err)
	}
	attr, err := c.EC2.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{InstanceId: aws.String(id), Attribute: types.InstanceAttributeNameGroupSet})
	if err != nil || len(attr.Groups) != 1 || aws.ToString(attr.Groups[0].GroupName) != "default" {
		t.Fatalf("groupSet: %+v %v", attr, err)
	}
	if _, err := c.EC2.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: web.GroupId}); err != nil {
		t.Fatalf("delete unused: %v", err)
	}
}

// TestNodeReceivesGroupsAndMetadata checks what a node is told: the rules,
// the peers and the metadata document, and that a rule change reaches it.
func TestNodeReceivesGroupsAndMetadata(t *testing.T) {
	c := cloud.Start(t, cloud.Options{})
	ctx := context.Background()
	ami := c.ImportImage(t, "guest")
	if _, err := c.EC2.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String("k")}); err != nil {
		t.Fatal(err)
	}
	run, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), MinCount: aws.Int32(2), MaxCount: aws.Int32(2),
		KeyName: aws.String("k"), MetadataOptions: &types.InstanceMetadataOptionsRequest{HttpTokens: types.HttpTokensStateOptional, HttpPutResponseHopLimit: aws.Int32(2)}})
	if err != nil {
		t.Fatal(err)
	}
	id := *run.Instances[0].InstanceId
	svc := c.Ctrl.Service()
	nodes, _, err := svc.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d, err := svc.NodeDesired(ctx, nodes[0].ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	var di nodeproto.DesiredInstance
	for _, x := range d.Instances {
		if x.ID == id {
			di = x
		}
	}
	if di.Metadata.InstanceID != id || len(di.Metadata.PublicKeys) != 1 || di.MetadataOptions.HTTPTokens != "optional" ||
		di.MetadataOptions.HopLimit != 2 || len(di.Network.Groups) != 1 || di.Network.Bridge == "" {
		t.Fatalf("desired instance: %+v", di)
	}
	if len(d.Groups) != 1 || len(d.Groups[0].Ingress) != 1 || d.Groups[0].Ingress[0].Groups[0] != d.Groups[0].ID || len(d.Peers) != 2 {
		t.Fatalf("groups %+v peers %+v", d.Groups, d.Peers)
	}
	// A rule change ends a node's long poll at once, and shows up in the
	// incremental answer.
	nc, err := c.Ctrl.LocalNodeClient(nodes[0].Name)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetNodeID(nodes[0].ID)
	authErr := make(chan error, 1)
	go func() {
		time.Sleep(100 * time.Millisecond)
		_, err := c.EC2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(d.Groups[0].ID),
			IpPermissions: []types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(80), ToPort: aws.Int32(80),
				IpRanges: []types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}}}})
		authErr <- err
	}()
	start := time.Now()
	d2, err := nc.Desired(ctx, d.Rev, 20*time.Second)
	if err := <-authErr; err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the long poll ended %v after the rule change", took)
	}
	if err != nil || len(d2.Groups) != 1 || len(d2.Groups[0].Ingress) != 2 || len(d2.Instances) != 0 {
		t.Fatalf("after authorize: %+v %v", d2, err)
	}
	// Metadata options change too.
	mo, err := c.EC2.ModifyInstanceMetadataOptions(ctx, &ec2.ModifyInstanceMetadataOptionsInput{InstanceId: aws.String(id), HttpTokens: types.HttpTokensStateRequired})
	if err != nil || mo.InstanceMetadataOptions.HttpTokens != types.HttpTokensStateRequired {
		t.Fatalf("ModifyInstanceMetadataOptions: %+v %v", mo, err)
	}
	d3, _ := svc.NodeDesired(ctx, nodes[0].ID, d2.Rev)
	if len(d3.Instances) != 1 || d3.Instances[0].MetadataOptions.HTTPTokens != "required" {
		t.Fatalf("after metadata change: %+v", d3.Instances)
	}
	// Termination protection.
	if _, err := c.EC2.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: aws.String(id),
		DisableApiTermination: &types.AttributeBooleanValue{Value: aws.Bool(true)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.EC2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); apiCode(err) != "OperationNotPermitted" {
		t.Fatalf("protected terminate: %v", err)
	}
}
