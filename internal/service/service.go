// Package service is Clipper's domain logic: accounts, instances, images,
// key pairs, tags and nodes. Every call is a short store transaction; nothing
// here waits on a node. The protocol edges (ec2, api, the node server) call
// into it and translate its model.Error values.
package service

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"time"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/store"
)

// Caller is the authenticated principal of a request.
type Caller struct {
	AccountID string
	AccessKey string
}

// Notifier learns which nodes have new desired state.
type Notifier interface {
	NodesChanged(nodeIDs ...string)
}

// Blobs reads the controller's content-addressed blob store.
type Blobs interface {
	Open(sha256 string) (io.ReadCloser, int64, error)
}

// Overcommit ratios the scheduler applies to node capacity.
type Overcommit struct {
	CPU    float64 `json:"cpu"`
	Memory float64 `json:"memory"`
	Disk   float64 `json:"disk"`
}

// Config configures a Service.
type Config struct {
	Region        string
	Zones         []string // availability zone names, in order
	InstanceTypes []model.InstanceType
	DefaultType   string
	Overcommit    Overcommit
	// VPCCIDR is the default network; zone k gets subnet k of size SubnetBits.
	VPCCIDR    netip.Prefix
	SubnetBits int
	// MTU is what instances get by DHCP: the underlay MTU minus the 50
	// bytes of VXLAN encapsulation.
	MTU int
	// TerminatedTTL is how long terminated instances stay visible.
	TerminatedTTL time.Duration
	// StopGrace is how long a graceful stop may take on the node.
	StopGrace time.Duration
	// NodeDownAfter marks a node down when it has not reported for this long.
	// With the controller checking every HealthCheckInterval, a node is down
	// at most NodeDownAfter + HealthCheckInterval after its last report.
	NodeDownAfter time.Duration
	// MaxInstances is the per-account instance limit reported to clients.
	MaxInstances int
	// PublicPools are the ranges elastic IPs are allocated from.
	PublicPools []netip.Prefix
	// MaxAddresses is the per-account elastic IP limit.
	MaxAddresses int
}

// DefaultConfig returns the configuration of a fresh all-in-one cloud.
func DefaultConfig() Config {
	return Config{
		Region:        "clipper-1",
		Zones:         []string{"clipper-1a"},
		InstanceTypes: DefaultInstanceTypes(),
		DefaultType:   "t3.micro",
		Overcommit:    Overcommit{CPU: 16, Memory: 1.5, Disk: 1},
		VPCCIDR:       netip.MustParsePrefix("172.31.0.0/16"),
		SubnetBits:    20,
		MTU:           1450,
		TerminatedTTL: time.Hour,
		StopGrace:     30 * time.Second,
		NodeDownAfter: 8 * time.Second,
		MaxInstances:  1000,
		MaxAddresses:  5,
	}
}

// DefaultInstanceTypes is the built-in instance type table.
func DefaultInstanceTypes() []model.InstanceType {
	return []model.InstanceType{
		{Name: "t3.nano", VCPUs: 2, MemoryMiB: 512, DiskGiB: 8},
		{Name: "t3.micro", VCPUs: 2, MemoryMiB: 1024, DiskGiB: 8},
		{Name: "t3.small", VCPUs: 2, MemoryMiB: 2048, DiskGiB: 8},
		{Name: "t3.medium", VCPUs: 2, MemoryMiB: 4096, DiskGiB: 8},
		{Name: "t3.large", VCPUs: 2, MemoryMiB: 8192, DiskGiB: 16},
		{Name: "m5.large", VCPUs: 2, MemoryMiB: 8192, DiskGiB: 16},
		{Name: "m5.xlarge", VCPUs: 4, MemoryMiB: 16384, DiskGiB: 32},
		{Name: "c5.large", VCPUs: 2, MemoryMiB: 4096, DiskGiB: 16},
		{Name: "c5.xlarge", VCPUs: 4, MemoryMiB: 8192, DiskGiB: 32},
	}
}

// Service implements the domain operations.
type Service struct {
	st     store.Store
	cfg    Config
	log    *slog.Logger
	notify Notifier
	blobs  Blobs
	now    func() time.Time
	types  map[string]model.InstanceType
	keys   keyCache
	watch  watchers
}

// New returns a Service. notify may be nil.
func New(st store.Store, cfg Config, blobs Blobs, notify Notifier, log *slog.Logger) (*Service, error) {
	if len(cfg.Zones) == 0 {
		return nil, fmt.Errorf("service: at least one availability zone is needed")
	}
	types := map[string]model.InstanceType{}
	for _, t := range cfg.InstanceTypes {
		if t.VCPUs <= 0 || t.MemoryMiB <= 0 {
			return nil, fmt.Errorf("service: instance type %q needs vcpus and memory", t.Name)
		}
		types[t.Name] = t
	}
	if _, ok := types[cfg.DefaultType]; !ok {
		return nil, fmt.Errorf("service: default instance type %q is not in the table", cfg.DefaultType)
	}
	if notify == nil {
		notify = nopNotifier{}
	}
	return &Service{st: st, cfg: cfg, log: log, notify: notify, blobs: blobs, now: time.Now, types: types}, nil
}

// Config returns the service configuration.
func (s *Service) Config() Config { return s.cfg }

// SetClock replaces the clock (tests).
func (s *Service) SetClock(now func() time.Time) { s.now = now }

// SetNotifier sets who learns about desired-state changes.
func (s *Service) SetNotifier(n Notifier) { s.notify = n }

type nopNotifier struct{}

func (nopNotifier) NodesChanged(...string) {}

func (s *Service) update(ctx context.Context, fn func(store.Tx) error) error {
	return s.st.Update(ctx, fn)
}

func (s *Service) view(ctx context.Context, fn func(store.Tx) error) error {
	return s.st.View(ctx, fn)
}

// nowMS is the current time at millisecond precision (what the store keeps).
func (s *Service) nowMS() time.Time {
	return s.now().UTC().Truncate(time.Millisecond)
}
