package controller_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/clipper-cloud/clipper/internal/api"
	"github.com/clipper-cloud/clipper/internal/client"
	"github.com/clipper-cloud/clipper/internal/compute/fake"
	"github.com/clipper-cloud/clipper/internal/controller"
	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/pki"
	"github.com/clipper-cloud/clipper/internal/service"
	"github.com/clipper-cloud/clipper/internal/sigv4"
	"github.com/clipper-cloud/clipper/internal/store"
	"github.com/clipper-cloud/clipper/internal/store/sqlite"
	"github.com/clipper-cloud/clipper/internal/testutil/cloud"
)

// TestNodeNamesAreIdentities: a join under the name of a node of the
// cloud is refused with a clear error; once the node is removed its
// record is gone and a join under the name makes a new node.
func TestNodeNamesAreIdentities(t *testing.T) {
	c := cloud.Start(t, cloud.Options{Nodes: 2})
	ctx := context.Background()
	before := nodeIDs(t, c)

	_, err := nodeproto.Join(ctx, c.Ctrl.NodeURL(), c.Ctrl.JoinToken(), "node1", t.TempDir())
	if !errors.Is(err, nodeproto.ErrNameInUse) || !strings.Contains(err.Error(), "clipper node rm node1") {
		t.Fatalf("join as node1 again: %v", err)
	}
	// A name that joined but never registered holds a live certificate.
	if _, err := nodeproto.Join(ctx, c.Ctrl.NodeURL(), c.Ctrl.JoinToken(), "node5", t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if _, err := nodeproto.Join(ctx, c.Ctrl.NodeURL(), c.Ctrl.JoinToken(), "node5", t.TempDir()); !errors.Is(err, nodeproto.ErrNameInUse) {
		t.Fatalf("join as node5 twice: %v", err)
	}

	c.Nodes[1].Stop()
	rm, err := c.Client.RemoveNode(ctx, "node2", false)
	if err != nil || rm.RevokedCertificates != 1 || len(rm.TerminatedInstances) != 0 {
		t.Fatalf("RemoveNode: %+v %v", rm, err)
	}
	if ids := nodeIDs(t, c); len(ids) != 1 || ids["node2"] != "" {
		t.Fatalf("nodes after rm: %v", ids)
	}
	dir := filepath.Join(c.Dir, "node2-again")
	if _, err := nodeproto.Join(ctx, c.Ctrl.NodeURL(), c.Ctrl.JoinToken(), "node2", filepath.Join(dir, "pki")); err != nil {
		t.Fatalf("join under a removed node's name: %v", err)
	}
	c.Nodes[1] = c.StartNode(t, "node2", fake.New(), dir)
	if id := nodeIDs(t, c)["node2"]; id == "" || id == before["node2"] {
		t.Fatalf("node2 joined again as %q, before %q: want a new node", id, before["node2"])
	}
}

func nodeIDs(t *testing.T, c *cloud.Cloud) map[string]string {
	t.Helper()
	nodes, _, err := c.Ctrl.Service().Nodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for _, n := range nodes {
		ids[n.Name] = n.ID
	}
	return ids
}

// TestExpiredNodeJoinsAgain: a node away past its certificate's expiry
// joins again under its name by presenting the expired certificate; a
// stranger without it is refused the name.
func TestExpiredNodeJoinsAgain(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a certificate to expire (about 2 s)")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	ctrl, err := controller.New(ctx, controller.Config{DataDir: dir, Listen: "127.0.0.1:0", NodeListen: "127.0.0.1:0",
		NodeCertTTL: 2 * time.Second, Service: service.DefaultConfig(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ctrl.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-ctrl.Ready()
	pkiDir := filepath.Join(dir, "node1")
	id, err := nodeproto.Join(ctx, ctrl.NodeURL(), ctrl.JoinToken(), "node1", pkiDir)
	if err != nil {
		t.Fatal(err)
	}
	nc := nodeproto.NewClient(ctrl.NodeURL(), id)
	if _, err := nc.Register(ctx, nodeproto.Registration{Name: "node1", Capacity: model.Capacity{VCPUs: 1, MemoryMiB: 512}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(id.Leaf().NotAfter) + 100*time.Millisecond)
	if _, err := nodeproto.Join(ctx, ctrl.NodeURL(), ctrl.JoinToken(), "node1", t.TempDir()); !errors.Is(err, nodeproto.ErrNameInUse) {
		t.Fatalf("a stranger joining as node1: %v", err)
	}
	again, err := nodeproto.Join(ctx, ctrl.NodeURL(), ctrl.JoinToken(), "node1", pkiDir)
	if err != nil {
		t.Fatalf("node1 joining again with its expired certificate: %v", err)
	}
	if again.Leaf().SerialNumber.Cmp(id.Leaf().SerialNumber) == 0 {
		t.Fatal("no new certificate")
	}
}

// TestTokenListAndRevoke lists and revokes join tokens through the native
// API (admin only): a revoked token joins nobody; revoking the one in
// DATA-DIR/join-token puts a new one there.
func TestTokenListAndRevoke(t *testing.T) {
	c := cloud.Start(t, cloud.Options{})
	ctx := context.Background()
	fileTok, err := pki.ParseToken(c.Ctrl.JoinToken())
	if err != nil {
		t.Fatal(err)
	}
	made, err := c.Client.CreateJoinToken(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	madeTok, _ := pki.ParseToken(made.Token)
	ls, err := c.Client.JoinTokens(ctx)
	if err != nil || len(ls) != 2 {
		t.Fatalf("JoinTokens: %+v %v", ls, err)
	}
	for _, ti := range ls {
		switch ti.ID {
		case fileTok.ID:
			if !ti.File || !ti.Expires.IsZero() {
				t.Errorf("the join-token file's token: %+v", ti)
			}
		case madeTok.ID:
			if ti.File || !ti.Expires.Equal(made.Expires) {
				t.Errorf("the created token: %+v", ti)
			}
		default:
			t.Errorf("unknown token %+v", ti)
		}
	}

	if out, err := c.Client.DeleteJoinToken(ctx, madeTok.ID); err != nil || out.NewFileToken != "" {
		t.Fatalf("DeleteJoinToken: %+v %v", out, err)
	}
	if _, err := nodeproto.Join(ctx, c.Ctrl.NodeURL(), made.Token, "node7", t.TempDir()); !errors.Is(err, pki.ErrTokenRejected) {
		t.Fatalf("join with a revoked token: %v", err)
	}
	if _, err := c.Client.DeleteJoinToken(ctx, madeTok.ID); err == nil || !strings.Contains(err.Error(), "no join token") {
		t.Fatalf("revoking it again: %v", err)
	}

	out, err := c.Client.DeleteJoinToken(ctx, fileTok.ID)
	if err != nil || out.NewFileToken == "" || out.NewFileToken == fileTok.ID {
		t.Fatalf("revoking the file's token: %+v %v", out, err)
	}
	b, err := os.ReadFile(filepath.Join(c.Dir, "controller", "join-token"))
	if err != nil {
		t.Fatal(err)
	}
	newTok, err := pki.ParseToken(strings.TrimSpace(string(b)))
	if err != nil || newTok.ID != out.NewFileToken || c.Ctrl.JoinToken() != newTok.String() {
		t.Fatalf("join-token file %q, controller %q, reply %+v", b, c.Ctrl.JoinToken(), out)
	}
	if _, err := nodeproto.Join(ctx, c.Ctrl.NodeURL(), fileTok.String(), "node8", t.TempDir()); !errors.Is(err, pki.ErrTokenRejected) {
		t.Fatalf("join with the old file token: %v", err)
	}
	if _, err := nodeproto.Join(ctx, c.Ctrl.NodeURL(), newTok.String(), "node8", t.TempDir()); err != nil {
		t.Fatalf("join with the new file token: %v", err)
	}

	// Only the admin manages tokens.
	user := userClient(t, c, "alice")
	if _, err := user.JoinTokens(ctx); err == nil || !strings.Contains(err.Error(), "UnauthorizedOperation") {
		t.Fatalf("a user listing tokens: %v", err)
	}
	if _, err := user.DeleteJoinToken(ctx, newTok.ID); err == nil || !strings.Contains(err.Error(), "UnauthorizedOperation") {
		t.Fatalf("a user revoking a token: %v", err)
	}
}

// TestForceRemoveTerminates: removing a node that hosts instances needs
// --force, which terminates them with a reason that names the node and
// deletes the forwards the node carried.
func TestForceRemoveTerminates(t *testing.T) {
	c := cloud.Start(t, cloud.Options{Service: func(sc *service.Config) {
		sc.PublicPools = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	}})
	ctx := context.Background()
	ami := c.ImportImage(t, "guest")
	run, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(run.Instances[0].InstanceId)
	c.WaitState(t, id, types.InstanceStateNameRunning, 10*time.Second)
	fwd, err := c.Ctrl.Service().CreateForward(ctx, service.Caller{AccountID: c.Ctrl.Credentials().AccountID}, service.ForwardSpec{Listen: "198.51.100.7:8080",
		To: aws.ToString(run.Instances[0].PrivateIpAddress) + ":80"})
	if err != nil {
		t.Fatal(err)
	}
	c.Nodes[0].Stop() // dead for good

	if _, err := c.Client.RemoveNode(ctx, "node1", false); err == nil || !strings.Contains(err.Error(), "force") {
		t.Fatalf("removing a node with an instance: %v", err)
	}
	rm, err := c.Client.RemoveNode(ctx, "node1", true)
	if err != nil || len(rm.TerminatedInstances) != 1 || rm.TerminatedInstances[0] != id ||
		len(rm.DeletedForwards) != 1 || rm.DeletedForwards[0] != fwd.ID {
		t.Fatalf("RemoveNode --force: %+v %v", rm, err)
	}
	inst := c.WaitState(t, id, types.InstanceStateNameTerminated, time.Second)
	if r := inst.StateReason; r == nil || aws.ToString(r.Code) != "Server.InternalError" || !strings.Contains(aws.ToString(r.Message), "node1") {
		t.Fatalf("state reason %+v", inst.StateReason)
	}
	if inst.PrivateIpAddress != nil && aws.ToString(inst.PrivateIpAddress) != "" {
		t.Errorf("a terminated instance keeps its address %s", aws.ToString(inst.PrivateIpAddress))
	}
	var fs []api.ForwardInfo
	if err := c.Client.Do(ctx, "GET", api.Prefix+"forwards", nil, 0, emptySHA256, &fs); err != nil || len(fs) != 0 {
		t.Fatalf("forwards after removal: %+v %v", fs, err)
	}
}

// userClient makes an account that is not the admin, with an access key,
// straight in the controller's database (the API has no call for it yet),
// and returns a native API client for it.
func userClient(t *testing.T, c *cloud.Cloud, name string) *client.Client {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(c.Dir, "controller", "clipper.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	key := model.AccessKey{ID: "AKIATESTUSER" + strings.ToUpper(name), Secret: strings.Repeat("s", 40), AccountID: "111122223333", Created: now}
	err = st.Update(ctx, func(tx store.Tx) error {
		if err := tx.CreateAccount(model.Account{ID: key.AccountID, Name: name, Created: now}); err != nil {
			return err
		}
		return tx.CreateAccessKey(key)
	})
	if err != nil {
		t.Fatal(err)
	}
	return &client.Client{Endpoint: c.Ctrl.APIURL(), Region: c.Ctrl.Service().Config().Region, HTTP: &http.Client{},
		Creds: sigv4.Credentials{AccessKeyID: key.ID, SecretAccessKey: key.Secret}}
}
