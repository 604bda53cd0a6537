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

	"github.com/clipper-cloud/clipper/internal/api"
	"github.com/clipper-cloud/clipper/internal/client"
	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/service"
	"github.com/clipper-cloud/clipper/internal/testutil/cloud"
)

// TestPortForwards manages forwards through the native API and checks the
// node carrying one is told at once, through its long poll.
func TestPortForwards(t *testing.T) {
	c := cloud.Start(t, cloud.Options{Service: func(sc *service.Config) {
		sc.PublicPools = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	}})
	ctx := context.Background()
	ami := c.ImportImage(t, "guest")
	run, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	target := aws.ToString(run.Instances[0].PrivateIpAddress)
	create := func(req api.ForwardRequest) (api.ForwardInfo, error) {
		body, _ := json.Marshal(req)
		sum := sha256.Sum256(body)
		var f api.ForwardInfo
		err := c.Client.Do(ctx, "POST", api.Prefix+"forwards", bytes.NewReader(body), int64(len(body)), hex.EncodeToString(sum[:]), &f)
		return f, err
	}
	nodes, _, err := c.Ctrl.Service().Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d0, err := c.Ctrl.Service().NodeDesired(ctx, nodes[0].ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The node's long poll ends when a forward appears.
	type polled struct {
		d   nodeproto.Desired
		err error
	}
	poll := func(since int64) chan polled {
		ch := make(chan polled, 1)
		go func() {
			nc, err := c.Ctrl.LocalNodeClient(nodes[0].Name)
			if err != nil {
				ch <- polled{err: err}
				return
			}
			nc.SetNodeID(nodes[0].ID)
			d, err := nc.Desired(ctx, since, 20*time.Second)
			ch <- polled{d, err}
		}()
		time.Sleep(100 * time.Millisecond)
		return ch
	}
	ch := poll(d0.Rev)
	start := time.Now()
	f, err := create(api.ForwardRequest{Listen: "198.51.100.9:8080", To: target + ":80"})
	if err != nil {
		t.Fatal(err)
	}
	p := <-ch
	if p.err != nil || len(p.d.Forwards) != 1 || p.d.Forwards[0].TargetIP != target || p.d.Forwards[0].ListenPort != 8080 ||
		p.d.Forwards[0].Protocol != "tcp" {
		t.Fatalf("node's answer after create: %+v %v", p.d.Forwards, p.err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the node learnt of the forward after %v", took)
	}
	var fs []api.ForwardInfo
	if err := c.Client.Do(ctx, "GET", api.Prefix+"forwards", nil, 0, emptySHA256, &fs); err != nil || len(fs) != 1 || fs[0].ID != f.ID ||
		fs[0].Listen != "198.51.100.9:8080" || fs[0].To != target+":80" {
		t.Fatalf("list: %+v %v", fs, err)
	}

	eip, err := c.Ctrl.Service().AllocateAddress(ctx, service.Caller{AccountID: c.Ctrl.Credentials().AccountID}, "198.51.100.10", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []api.ForwardRequest{
		{Listen: "198.51.100.9:8080", To: target + ":80"}, // taken
		{Listen: "198.51.100.9", To: target + ":80"},      // no port
		{Listen: "198.51.100.9:0", To: target + ":80"},    // port 0
		{Listen: "[2001:db8::1]:80", To: target + ":80"},  // not IPv4
		{Listen: "198.51.100.9:81", To: target + ":80", Protocol: "sctp"},
		{Listen: "198.51.100.9:82", To: "10.9.9.9:80", Node: "nosuchnode"},
		{Listen: "203.0.113.9:80", To: target + ":80"},     // not in the pool
		{Listen: eip.PublicIP + ":80", To: target + ":80"}, // an elastic IP
	} {
		if _, err := create(bad); err == nil {
			t.Errorf("%+v was accepted", bad)
		} else if ae, ok := err.(*client.APIError); !ok || ae.Status/100 != 4 {
			t.Errorf("%+v: %v, want a 4xx", bad, err)
		}
	}

	ch = poll(p.d.Rev)
	if err := c.Client.Do(ctx, "DELETE", api.Prefix+"forwards/"+f.ID, nil, 0, emptySHA256, nil); err != nil {
		t.Fatal(err)
	}
	if p := <-ch; p.err != nil || len(p.d.Forwards) != 0 {
		t.Fatalf("node's answer after delete: %+v %v", p.d.Forwards, p.err)
	}
	if err := c.Client.Do(ctx, "DELETE", api.Prefix+"forwards/"+f.ID, nil, 0, emptySHA256, nil); err == nil {
		t.Error("deleting a deleted forward succeeded")
	}
}
