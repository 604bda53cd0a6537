package controller_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/clipper-cloud/clipper/internal/compute/fake"
	"github.com/clipper-cloud/clipper/internal/controller"
	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/pki"
	"github.com/clipper-cloud/clipper/internal/service"
	"github.com/clipper-cloud/clipper/internal/testutil/cloud"
)

// TestJoin walks a node through joining: nodes that joined with the token
// get instances; a wrong token, a wrong CA pin, a request without a
// certificate and a certificate used for another node are refused; a
// token from the admin API joins a node; a removed node's certificate is
// revoked and the node forgotten; renewal yields a new certificate.
func TestJoin(t *testing.T) {
	c := cloud.Start(t, cloud.Options{Nodes: 2}) // both joined with DATA-DIR/join-token
	ctx := context.Background()
	ami := c.ImportImage(t, "guest")
	run, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), MinCount: aws.Int32(2), MaxCount: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range run.Instances {
		c.WaitState(t, *i.InstanceId, types.InstanceStateNameRunning, 30*time.Second)
	}
	// The nodes keep their certificates (0600 key) in their data dirs.
	id1, err := nodeproto.LoadIdentity(filepath.Join(c.Dir, "node1", "pki"))
	if err != nil || id1.Name() != "node1" {
		t.Fatalf("node1 identity: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(c.Dir, "node1", "pki", "node.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("node.key: %v %v", fi.Mode(), err)
	}

	good, err := pki.ParseToken(c.Ctrl.JoinToken())
	if err != nil {
		t.Fatal(err)
	}
	// A wrong secret: the controller refuses, the node says so.
	bad := good
	bad.Secret = strings.Repeat("0", len(good.Secret))
	_, err = nodeproto.Join(ctx, c.Ctrl.NodeURL(), bad.String(), "node9", t.TempDir())
	if !errors.Is(err, pki.ErrTokenRejected) || !strings.HasPrefix(err.Error(), "join token rejected: ") {
		t.Fatalf("wrong token: %v", err)
	}
	// A wrong pin: the node refuses the controller before sending the token.
	other, err := pki.OpenCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	badPin := good
	badPin.Pin = other.Pin()
	_, err = nodeproto.Join(ctx, c.Ctrl.NodeURL(), badPin.String(), "node9", t.TempDir())
	if !errors.Is(err, pki.ErrPinMismatch) {
		t.Fatalf("wrong pin: %v", err)
	}

	// Without a client certificate only join answers.
	plain := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := plain.Get(c.Ctrl.NodeURL() + nodeproto.PathDesired)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "node certificate is required") {
		t.Fatalf("no client certificate: %d %s", resp.StatusCode, body)
	}
	// Plain HTTP gets nothing.
	if resp, err := http.Get("http://" + strings.TrimPrefix(c.Ctrl.NodeURL(), "https://") + nodeproto.PathDesired); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP answered")
		}
	}

	// node1's certificate cannot act as node2.
	nodes, _, err := c.Ctrl.Service().Nodes(ctx)
	if err != nil || len(nodes) != 2 {
		t.Fatalf("nodes: %v %v", nodes, err)
	}
	var node2ID string
	for _, n := range nodes {
		if n.Name == "node2" {
			node2ID = n.ID
		}
	}
	nc := nodeproto.NewClient(c.Ctrl.NodeURL(), id1)
	nc.SetNodeID(node2ID)
	if _, err := nc.Desired(ctx, 0, 0); !errors.Is(err, nodeproto.ErrUnauthorized) || !strings.Contains(err.Error(), "cannot act as node") {
		t.Fatalf("node1 as node2: %v", err)
	}
	if _, err := nc.Register(ctx, nodeproto.Registration{Name: "node2", Capacity: model.Capacity{VCPUs: 1, MemoryMiB: 1}}); !errors.Is(err, nodeproto.ErrUnauthorized) {
		t.Fatalf("node1 registering node2: %v", err)
	}
	nc.SetNodeID("")
	if d, err := nc.Desired(ctx, 0, 0); err != nil || !d.Full {
		t.Fatalf("node1 as itself: %+v %v", d, err)
	}

	// Renewal yields a new certificate for the same node, stored on disk.
	before := id1.Leaf()
	if err := nc.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	after := id1.Leaf()
	if after.SerialNumber.Cmp(before.SerialNumber) == 0 || after.Subject.CommonName != "node1" {
		t.Fatalf("renewal kept serial %v", before.SerialNumber)
	}
	if stored, err := nodeproto.LoadIdentity(filepath.Join(c.Dir, "node1", "pki")); err != nil || stored.Leaf().SerialNumber.Cmp(after.SerialNumber) != 0 {
		t.Fatalf("renewed certificate not stored: %v", err)
	}
	if _, err := nc.Desired(ctx, 0, 0); err != nil {
		t.Fatalf("after renewal: %v", err)
	}

	// A token from the admin API joins a third node; an expired one does not.
	tok, err := c.Client.CreateJoinToken(ctx, time.Hour)
	if err != nil || tok.Expires.IsZero() {
		t.Fatalf("CreateJoinToken: %+v %v", tok, err)
	}
	dir3 := filepath.Join(c.Dir, "node3")
	if _, err := nodeproto.Join(ctx, c.Ctrl.NodeURL(), tok.Token, "node3", filepath.Join(dir3, "pki")); err != nil {
		t.Fatal(err)
	}
	c.Nodes = append(c.Nodes, c.StartNode(t, "node3", fake.New(), dir3))
	short, err := c.Client.CreateJoinToken(ctx, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	if _, err := nodeproto.Join(ctx, c.Ctrl.NodeURL(), short.Token, "node4", t.TempDir()); !errors.Is(err, pki.ErrTokenRejected) {
		t.Fatalf("expired token: %v", err)
	}

	// Removing node3 revokes its certificate: "certificate revoked", nothing else.
	rm, err := c.Client.RemoveNode(ctx, "node3", false)
	if err != nil || rm.RevokedCertificates != 1 {
		t.Fatalf("RemoveNode: %+v %v", rm, err)
	}
	id3, err := nodeproto.LoadIdentity(filepath.Join(dir3, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = nodeproto.NewClient(c.Ctrl.NodeURL(), id3).Desired(ctx, 0, 0)
	if !errors.Is(err, nodeproto.ErrUnauthorized) || !strings.HasSuffix(err.Error(), ": certificate revoked") {
		t.Fatalf("revoked node: %v", err)
	}
	nodes, _, _ = c.Ctrl.Service().Nodes(ctx)
	for _, n := range nodes {
		if n.Name == "node3" {
			t.Fatalf("removed node is still listed, %s", n.State)
		}
	}
	// A node with live instances is kept unless forced; unknown names are not found.
	if _, err := c.Client.RemoveNode(ctx, "node1", false); err == nil || !strings.Contains(err.Error(), "live instance") {
		t.Fatalf("removing a busy node: %v", err)
	}
	if _, err := c.Client.RemoveNode(ctx, "nope", false); err == nil {
		t.Fatal("removed an unknown node")
	}
}

// TestNodeRenewsItself runs a controller with short node certificates and
// checks that a node renews before expiry and keeps working after the first
// certificate expired.
func TestNodeRenewsItself(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a certificate to expire (about 6 s)")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	ctrl, err := controller.New(ctx, controller.Config{DataDir: dir, Listen: "127.0.0.1:0", NodeListen: "127.0.0.1:0",
		NodeCertTTL: 4 * time.Second, Service: service.DefaultConfig(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ctrl.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-ctrl.Ready()
	id, err := nodeproto.Join(ctx, ctrl.NodeURL(), ctrl.JoinToken(), "node1", filepath.Join(dir, "node1"))
	if err != nil {
		t.Fatal(err)
	}
	first := id.Leaf()
	nc := nodeproto.NewClient(ctrl.NodeURL(), id)
	reg, err := nc.Register(ctx, nodeproto.Registration{Name: "node1", Capacity: model.Capacity{VCPUs: 1, MemoryMiB: 512}})
	if err != nil {
		t.Fatal(err)
	}
	nc.SetNodeID(reg.NodeID)
	for time.Now().Before(first.NotAfter.Add(2 * time.Second)) {
		if _, err := nc.Report(ctx, nodeproto.Report{}); err != nil {
			t.Fatalf("report at %v (first certificate until %v): %v", time.Now(), first.NotAfter, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if id.Leaf().SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("the node did not renew its certificate")
	}
}
