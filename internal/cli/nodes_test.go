package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/testutil/cloud"
)

// `clipper node ls` shows each node's self-check condition: "-" before
// the first, "ok" when healthy, else the condition.
func TestNodeLsCondition(t *testing.T) {
	c := cloud.Start(t, cloud.Options{Nodes: 2})
	ctx := context.Background()
	svc := c.Ctrl.Service()
	nodes, _, err := svc.Nodes(ctx)
	if err != nil || len(nodes) != 2 {
		t.Fatalf("nodes %+v, %v", nodes, err)
	}
	byName := map[string]string{}
	for _, n := range nodes {
		byName[n.Name] = n.ID
	}
	if err := svc.RecordSelfCheck(ctx, byName["node1"], model.NodeSelfCheck{Checked: time.Now(), MTU: 1500, Peers: 2,
		Conditions: []model.NodeCondition{{Type: model.CondPeerPath, Status: model.CondBlackHole, Peer: "10.0.0.2", MTU: 1500, PathMTU: 1400, Message: "vanish"}}}); err != nil {
		t.Fatal(err)
	}
	key := c.Ctrl.Credentials()
	t.Setenv("AWS_ACCESS_KEY_ID", key.ID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", key.Secret)
	out, code := runCLI(t, "node", "ls", "--endpoint-url", c.Ctrl.APIURL())
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasSuffix(strings.TrimSpace(lines[0]), "CONDITION") {
		t.Fatalf("table:\n%s", out)
	}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		switch f[0] {
		case "node1":
			if !strings.HasSuffix(l, "black-hole to 10.0.0.2") {
				t.Errorf("node1 row %q, want the black hole", l)
			}
		case "node2":
			if f[len(f)-1] != "-" {
				t.Errorf("node2 row %q, want no self-check yet", l)
			}
		}
	}
	if err := svc.RecordSelfCheck(ctx, byName["node2"], model.NodeSelfCheck{Checked: time.Now(), MTU: 1500, Peers: 1}); err != nil {
		t.Fatal(err)
	}
	if out, _ := runCLI(t, "node", "ls", "--endpoint-url", c.Ctrl.APIURL()); !strings.Contains(out, " ok\n") {
		t.Errorf("a healthy self-check does not show ok:\n%s", out)
	}
}
