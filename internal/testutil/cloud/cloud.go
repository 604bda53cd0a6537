// Package cloud starts a whole Clipper cloud in-process for tests: a real
// controller (SQLite store, EC2 API over HTTP) and node agents that talk to
// it over the node protocol, with the fake driver unless told otherwise.
// Clients are the real ones: aws-sdk-go-v2 and Clipper's own client.
package cloud

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/clipper-cloud/clipper/internal/agent"
	"github.com/clipper-cloud/clipper/internal/client"
	"github.com/clipper-cloud/clipper/internal/compute"
	"github.com/clipper-cloud/clipper/internal/compute/fake"
	"github.com/clipper-cloud/clipper/internal/controller"
	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/network"
	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/service"
)

// Options shape the cloud.
type Options struct {
	Nodes    int                            // node agents (default 1)
	Driver   func(i int) compute.Hypervisor // default: a fake driver per node
	Capacity model.Capacity                 // per node (default 64 vCPU, 256 GiB, 1 TiB)
	Service  func(*service.Config)          // tweak the service configuration
	Logger   *slog.Logger                   // default: discard
	// Agent, when set, adjusts each node agent's configuration before it
	// starts (its name says which node).
	Agent func(name string, cfg *agent.Config)
}

// Node is one running agent.
type Node struct {
	Agent  *agent.Agent
	Driver compute.Hypervisor
	Dir    string
	cancel context.CancelFunc
	done   chan error
	name   string
}

// Cloud is a running cloud.
type Cloud struct {
	Ctrl   *controller.Controller
	Nodes  []*Node
	EC2    *ec2.Client
	Client *client.Client
	Dir    string
	log    *slog.Logger
	opts   Options
}

// Start starts a cloud and stops it when the test ends.
func Start(t testing.TB, o Options) *Cloud {
	t.Helper()
	if o.Nodes == 0 {
		o.Nodes = 1
	}
	if o.Driver == nil {
		o.Driver = func(int) compute.Hypervisor { return fake.New() }
	}
	if o.Capacity.VCPUs == 0 {
		o.Capacity = model.Capacity{VCPUs: 64, MemoryMiB: 256 << 10, DiskMiB: 1 << 20}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	dir := t.TempDir()
	sc := service.DefaultConfig()
	if o.Service != nil {
		o.Service(&sc)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ctrl, err := controller.New(ctx, controller.Config{DataDir: filepath.Join(dir, "controller"), Listen: "127.0.0.1:0",
		NodeListen: "127.0.0.1:0", Service: sc, Logger: o.Logger})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ctrlDone := make(chan error, 1)
	go func() { ctrlDone <- ctrl.Run(ctx) }()
	c := &Cloud{Ctrl: ctrl, Dir: dir, log: o.Logger, opts: o}
	t.Cleanup(func() {
		for _, n := range c.Nodes {
			n.Stop()
		}
		cancel()
		<-ctrlDone
	})
	select {
	case <-ctrl.Ready():
	case err := <-ctrlDone:
		t.Fatalf("controller: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("controller not ready after 10 s")
	}
	for i := range o.Nodes {
		c.Nodes = append(c.Nodes, c.StartNode(t, fmt.Sprintf("node%d", i+1), o.Driver(i), filepath.Join(dir, fmt.Sprintf("node%d", i+1))))
	}
	key := ctrl.Credentials()
	c.EC2 = ec2.New(ec2.Options{
		Region:       sc.Region,
		BaseEndpoint: aws.String(ctrl.APIURL()),
		Credentials:  credentials.NewStaticCredentialsProvider(key.ID, key.Secret, ""),
		Retryer:      RetryClosed(),
		// Benchmarks drive it from 100 goroutines: keep their connections.
		HTTPClient: &http.Client{Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256}},
	})
	c.Client = &client.Client{Endpoint: ctrl.APIURL(), Region: sc.Region,
		Creds: clientCreds(key)}
	c.Client.HTTP = defaultHTTP()
	return c
}

// StartNode starts a node agent over the given driver and state directory.
func (c *Cloud) StartNode(t testing.TB, name string, drv compute.Hypervisor, dir string) *Node {
	t.Helper()
	// Nodes join like `clipper node` does: the join token once, then mTLS
	// with the certificate kept in DIR/pki.
	id, err := nodeproto.LoadIdentity(filepath.Join(dir, "pki"))
	if errors.Is(err, os.ErrNotExist) {
		id, err = nodeproto.Join(context.Background(), c.Ctrl.NodeURL(), c.Ctrl.JoinToken(), name, filepath.Join(dir, "pki"))
	}
	if err != nil {
		t.Fatal(err)
	}
	cfg := agent.Config{
		Client:  nodeproto.NewClient(c.Ctrl.NodeURL(), id),
		DataDir: dir, Name: name, Driver: drv, Network: network.Noop{},
		Logger: c.log, Capacity: c.opts.Capacity,
	}
	if c.opts.Agent != nil {
		c.opts.Agent(name, &cfg)
	}
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{Agent: a, Driver: drv, Dir: dir, cancel: cancel, done: make(chan error, 1), name: name}
	go func() { n.done <- a.Run(ctx) }()
	select {
	case <-a.Ready():
	case err := <-n.done:
		t.Fatalf("agent %s: %v", name, err)
	case <-time.After(10 * time.Second):
		t.Fatalf("agent %s not ready after 10 s", name)
	}
	return n
}

// Stop stops the agent (VMs stay, as when an agent process dies).
func (n *Node) Stop() {
	n.cancel()
	if n.done != nil {
		<-n.done
		n.done = nil
	}
}

// ImportImage uploads a small kernel-only image through the real API and
// registers it; the fake driver never reads the bytes.
func (c *Cloud) ImportImage(t testing.TB, name string) string {
	t.Helper()
	ctx := context.Background()
	kpath := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(kpath, []byte("not really a kernel: "+name), 0o644); err != nil {
		t.Fatal(err)
	}
	kernel, err := c.Client.UploadFile(ctx, kpath)
	if err != nil {
		t.Fatal(err)
	}
	loc, err := c.Client.UploadManifest(ctx, model.ImageManifest{Kernel: kernel, Machine: "microvm"})
	if err != nil {
		t.Fatal(err)
	}
	id, err := c.Client.RegisterImage(ctx, name, "test image", loc)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// WaitState polls DescribeInstances until the instance is in state.
func (c *Cloud) WaitState(t testing.TB, id string, state types.InstanceStateName, within time.Duration) types.Instance {
	t.Helper()
	deadline := time.Now().Add(within)
	var last types.InstanceStateName
	for time.Now().Before(deadline) {
		out, err := c.EC2.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err == nil && len(out.Reservations) == 1 && len(out.Reservations[0].Instances) == 1 {
			inst := out.Reservations[0].Instances[0]
			last = inst.State.Name
			if last == state {
				return inst
			}
		} else if err != nil && !errors.Is(err, context.Canceled) {
			t.Logf("describe %s: %v", id, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: state %s after %s, want %s", id, last, within, state)
	return types.Instance{}
}
