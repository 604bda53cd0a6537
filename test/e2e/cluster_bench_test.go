package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// eipMoves is how many moves BenchmarkEIPMoveAcrossNodes measures.
const eipMoves = 10

// BenchmarkEIPMoveAcrossNodes measures what a user waits for when an
// elastic IP moves: from the AssociateAddress call (with
// AllowReassociation) to the first connection from the router namespace
// (the Internet) that reaches the new holder, a real VM on the other node
// of the cluster topology of TestClusterOverlay. That span holds the API
// call, the controller's transaction, both nodes' long polls, the new
// node's DNAT rules, /32 and gratuitous ARP, and the router's neighbour
// update. The router opens a new connection every time (100 ms connect
// timeout), asking GET / (the guest's static page names it). Moves
// alternate between the nodes; p50-ms and max-ms are over eipMoves moves,
// api-ms is the median of the AssociateAddress call alone.
func BenchmarkEIPMoveAcrossNodes(b *testing.B) {
	requireVMs(b)
	c := startCluster(b)
	ctx := context.Background()
	ami := c.ImportGuest(b, "bench")
	g, err := c.EC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("web"), Description: aws.String("web")})
	if err != nil {
		b.Fatal(err)
	}
	c.allowFromInternet(b, aws.ToString(g.GroupId))
	var ids []string
	for _, node := range []string{"node1", "node2"} {
		i := c.launchOn(b, node, &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Micro,
			MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SecurityGroupIds: []string{aws.ToString(g.GroupId)}})
		ids = append(ids, aws.ToString(i.InstanceId))
	}
	for _, id := range ids {
		c.WaitConsole(b, id, "CLIPPER-INSTANCE-ID", 2*time.Minute)
	}
	alloc, err := c.EC2.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: types.DomainTypeVpc})
	if err != nil {
		b.Fatal(err)
	}
	eip := aws.ToString(alloc.PublicIp)
	associate := func(id string) time.Duration {
		start := time.Now()
		if _, err := c.EC2.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: alloc.AllocationId,
			InstanceId: aws.String(id), AllowReassociation: aws.Bool(true)}); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	// firstReach connects until a connection reaches the instance id.
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel()
			return c.router.DialContext(ctx, network, addr)
		}}}
	firstReach := func(id string) {
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if page, err := getPage(hc, "http://"+eip+"/"); err == nil && page == "clipper-guest "+id {
				return
			}
		}
		b.Fatalf("%s never reached %s", eip, id)
	}
	associate(ids[0])
	firstReach(ids[0])

	var took, api []time.Duration
	for b.Loop() {
		took, api = nil, nil
		for n := range eipMoves {
			to := ids[(n+1)%2]
			start := time.Now()
			api = append(api, associate(to))
			firstReach(to)
			took = append(took, time.Since(start))
		}
	}
	slices.Sort(took)
	b.ReportMetric(float64(median(took).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(median(api).Microseconds())/1000, "api-ms")
	b.ReportMetric(0, "ns/op")
}

// getPage GETs url with a 1 s limit.
func getPage(hc *http.Client, url string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return strings.TrimSpace(string(body)), err
}
