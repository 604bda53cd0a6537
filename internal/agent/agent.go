// Package agent is the node agent: it dials the controller, registers the
// host, receives the desired state of its instances and converges the host
// to it (level-triggered and idempotent), and reports what it observes.
// VMs outlive the agent; a restarted agent re-adopts them.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clipper-cloud/clipper/internal/compute"
	"github.com/clipper-cloud/clipper/internal/image"
	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/version"
)

// Network is the node networking the agent needs for instances.
type Network interface {
	// Attach prepares or updates an instance's port (tap on its network's
	// bridge, DHCP lease, anti-spoofing, security groups). Idempotent.
	Attach(ctx context.Context, id string, n nodeproto.Network) (nodeproto.Port, error)
	// Detach removes what Attach made. Detaching an unknown ID is a no-op.
	Detach(ctx context.Context, id string) error
	// SetGroups installs security group definitions; with full, groups not
	// listed are removed.
	SetGroups(ctx context.Context, groups []nodeproto.SecurityGroup, full bool) error
	// SetForwards replaces the node's port forwards with fs (the whole
	// list). Idempotent.
	SetForwards(ctx context.Context, fs []nodeproto.Forward) error
	// SetPeers hands over every live instance of the networks the node
	// serves (the overlay's forwarding entries come from it). Idempotent.
	SetPeers(ctx context.Context, peers []nodeproto.Peer) error
}

// Metadata is the node's instance metadata service.
type Metadata interface {
	// Set serves md for the instance whose packets carry mark.
	Set(id string, mark uint32, md nodeproto.InstanceMetadata, opts nodeproto.MetadataOptions)
	// Remove stops serving an instance.
	Remove(id string)
}

// Config configures an agent.
type Config struct {
	Client   *nodeproto.Client
	DataDir  string
	Name     string
	Zone     string
	Address  string
	Driver   compute.Hypervisor
	Network  Network
	Metadata Metadata // nil: no metadata service
	Logger   *slog.Logger
	Capacity model.Capacity // zero: detected from the host
	// SelfCheck tunes the overlay self-check (selfcheck.go).
	SelfCheck SelfCheckConfig
}

// Agent is a node agent.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	client *nodeproto.Client
	cache  *image.Cache
	bootID string
	state  *stateFile

	mu     sync.Mutex
	insts  map[string]*instance
	synced bool // a full desired state has been applied
	net    *netState
	fwd    fwdState // port forwards, touched by the poll loop only
	// attached holds the instances whose port and metadata this agent
	// process has set up.
	attached sync.Map
	self     selfCheck // the overlay self-check's latest result

	reportKick chan struct{}
	ready      chan struct{}
	readyOnce  sync.Once
	consoleMax int
	interval   time.Duration
	wg         sync.WaitGroup
}

// New returns an agent.
func New(cfg Config) (*Agent, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, err
		}
		cfg.Name = h
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	state, err := openStateFile(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: cfg.Logger.With("component", "agent", "node", cfg.Name), client: cfg.Client,
		insts: map[string]*instance{}, reportKick: make(chan struct{}, 1), ready: make(chan struct{}),
		consoleMax: 64 * 1024, interval: 2 * time.Second, bootID: bootID(), state: state, net: newNetState()}
	if a.cfg.Metadata == nil {
		a.cfg.Metadata = noMetadata{}
	}
	a.cfg.SelfCheck.defaults(a)
	cache, err := image.NewCache(filepath.Join(cfg.DataDir, "images"), a.fetchBlob)
	if err != nil {
		return nil, err
	}
	a.cache = cache
	return a, nil
}

// Ready is closed once the agent has registered and applied a full sync.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Run registers and serves until ctx ends. VMs keep running after it returns.
func (a *Agent) Run(ctx context.Context) error {
	reply, err := a.register(ctx)
	if err != nil {
		return err
	}
	if reply.ReportInterval > 0 {
		a.interval = reply.ReportInterval
	}
	if reply.ConsoleMaxBytes > 0 {
		a.consoleMax = reply.ConsoleMaxBytes
	}
	a.log = a.log.With("node_id", reply.NodeID)
	a.log.Info("agent registered", "zone", reply.Zone, "driver", a.cfg.Driver.Name())
	errc := make(chan error, 5)
	a.wg.Add(5)
	go func() { defer a.wg.Done(); errc <- a.state.run(ctx) }()
	go func() { defer a.wg.Done(); errc <- a.pollLoop(ctx) }()
	go func() { defer a.wg.Done(); errc <- a.reportLoop(ctx) }()
	go func() { defer a.wg.Done(); errc <- a.scanLoop(ctx) }()
	go func() { defer a.wg.Done(); errc <- a.selfCheckLoop(ctx) }()
	var first error
	select {
	case <-ctx.Done():
	case first = <-errc:
	}
	a.wg.Wait()
	a.log.Info("agent stopped; VMs keep running")
	if errors.Is(first, context.Canceled) {
		first = nil
	}
	return first
}

func (a *Agent) register(ctx context.Context) (nodeproto.RegistrationReply, error) {
	capacity := a.cfg.Capacity
	if capacity.VCPUs == 0 {
		capacity = detectCapacity(a.cfg.DataDir)
	}
	reg := nodeproto.Registration{Name: a.cfg.Name, Zone: a.cfg.Zone, Address: a.cfg.Address,
		Version: version.Version, Capacity: capacity}
	backoff := 200 * time.Millisecond
	for {
		reply, err := a.client.Register(ctx, reg)
		if err == nil {
			a.client.SetNodeID(reply.NodeID)
			return reply, nil
		}
		var se *nodeproto.StatusError
		if errors.Is(err, nodeproto.ErrUnauthorized) || (errors.As(err, &se) && se.Status < 500) {
			return reply, fmt.Errorf("register with the controller: %w", err)
		}
		a.log.Warn("controller not reachable; retrying", "error", err, "in", backoff)
		select {
		case <-ctx.Done():
			return reply, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (a *Agent) fetchBlob(ctx context.Context, sha string) (io.ReadCloser, error) {
	return a.client.Blob(ctx, sha)
}

// detectCapacity reads the host's vCPUs, memory and free disk.
func detectCapacity(dir string) model.Capacity {
	c := model.Capacity{VCPUs: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				c.MemoryMiB = int(kb / 1024)
			}
		}
	}
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) == nil {
		c.DiskMiB = int64(st.Bavail) * int64(st.Bsize) >> 20
	}
	return c
}

// bootID identifies the host's current boot, to notice host reboots.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

type noMetadata struct{}

func (noMetadata) Set(string, uint32, nodeproto.InstanceMetadata, nodeproto.MetadataOptions) {}
func (noMetadata) Remove(string)                                                             {}
