// Package fake is an in-memory compute.Hypervisor for tests: VMs are map
// entries that change state at once. It passes the same conformance suite
// as the qemu driver, and can inject failures.
package fake

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/clipper-cloud/clipper/internal/compute"
)

// FailPrefix makes Start fail when a spec's Kernel starts with it; the rest
// of the path is the failure message.
const FailPrefix = "fail:"

// Driver is the fake hypervisor.
type Driver struct {
	mu  sync.Mutex
	vms map[string]*vm
}

type vm struct {
	spec    compute.Spec
	status  compute.Status
	console []byte
	addr    string // where it waits for a migration (Incoming)
}

var (
	_ compute.Hypervisor = (*Driver)(nil)
	_ compute.Migrator   = (*Driver)(nil)
)

// New returns an empty fake driver.
func New() *Driver { return &Driver{vms: map[string]*vm{}} }

// Name implements compute.Hypervisor.
func (d *Driver) Name() string { return "fake" }

func validate(s compute.Spec) error {
	switch {
	case s.ID == "":
		return fmt.Errorf("%w: no instance ID", compute.ErrInvalidSpec)
	case s.VCPUs <= 0 || s.MemoryMiB <= 0:
		return fmt.Errorf("%w: vCPUs and memory must be positive", compute.ErrInvalidSpec)
	case s.Kernel == "" && s.BaseImage == "":
		return fmt.Errorf("%w: neither a kernel nor a disk to boot", compute.ErrInvalidSpec)
	case s.Machine == "microvm" && s.Kernel == "":
		return fmt.Errorf("%w: microvm needs direct kernel boot", compute.ErrInvalidSpec)
	}
	return nil
}

func specEqual(a, b compute.Spec) bool {
	if len(a.NICs) != len(b.NICs) {
		return false
	}
	for i := range a.NICs {
		if a.NICs[i] != b.NICs[i] {
			return false
		}
	}
	a.NICs, b.NICs = nil, nil
	return fmt.Sprint(a) == fmt.Sprint(b)
}

// Create implements compute.Hypervisor.
func (d *Driver) Create(ctx context.Context, s compute.Spec) error {
	if err := validate(s); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if v, ok := d.vms[s.ID]; ok {
		if specEqual(v.spec, s) {
			return nil
		}
		return fmt.Errorf("%w: %s with a different spec", compute.ErrExists, s.ID)
	}
	d.vms[s.ID] = &vm{spec: s, status: compute.Status{ID: s.ID, State: compute.StateStopped}}
	return nil
}

func (d *Driver) get(id string) (*vm, error) {
	v, ok := d.vms[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", compute.ErrNotFound, id)
	}
	return v, nil
}

// Start implements compute.Hypervisor.
func (d *Driver) Start(ctx context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.get(id)
	if err != nil {
		return err
	}
	if v.status.State == compute.StateRunning {
		return nil
	}
	if msg, ok := strings.CutPrefix(v.spec.Kernel, FailPrefix); ok {
		v.status.ExitReason = "qemu exited: " + msg
		return fmt.Errorf("start %s: %s", id, msg)
	}
	v.status = compute.Status{ID: id, State: compute.StateRunning, PID: 100000 + rand.IntN(900000), StartedAt: time.Now()}
	v.console = append(v.console, "fake: booting\nCLIPPER-GUEST-READY\n"...)
	return nil
}

// Stop implements compute.Hypervisor.
func (d *Driver) Stop(ctx context.Context, id string, grace time.Duration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.get(id)
	if err != nil {
		return err
	}
	if v.status.State != compute.StateStopped {
		v.status = compute.Status{ID: id, State: compute.StateStopped, ExitReason: "guest powered off"}
		v.console = append(v.console, "fake: power down\n"...)
	}
	return nil
}

// Reboot implements compute.Hypervisor.
func (d *Driver) Reboot(ctx context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.get(id)
	if err != nil {
		return err
	}
	if v.status.State != compute.StateRunning {
		return fmt.Errorf("%w: %s is not running", compute.ErrInvalidState, id)
	}
	v.console = append(v.console, "fake: reset\nCLIPPER-GUEST-READY\n"...)
	return nil
}

// Delete implements compute.Hypervisor.
func (d *Driver) Delete(ctx context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if v, ok := d.vms[id]; ok && v.addr != "" {
		incoming.Lock()
		delete(incoming.m, v.addr)
		incoming.Unlock()
	}
	delete(d.vms, id)
	return nil
}

// Status implements compute.Hypervisor.
func (d *Driver) Status(ctx context.Context, id string) (compute.Status, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.get(id)
	if err != nil {
		return compute.Status{}, err
	}
	return v.status, nil
}

// List implements compute.Hypervisor.
func (d *Driver) List(ctx context.Context) ([]compute.Status, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]compute.Status, 0, len(d.vms))
	for _, v := range d.vms {
		out = append(out, v.status)
	}
	return out, nil
}

// Console implements compute.Hypervisor.
func (d *Driver) Console(ctx context.Context, id string, max int) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.get(id)
	if err != nil {
		return nil, err
	}
	c := v.console
	if len(c) > max {
		c = c[len(c)-max:]
	}
	return append([]byte(nil), c...), nil
}

// PowerOff simulates the guest shutting itself down.
func (d *Driver) PowerOff(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if v, ok := d.vms[id]; ok && v.status.State == compute.StateRunning {
		v.status = compute.Status{ID: id, State: compute.StateStopped, ExitReason: "guest powered off"}
	}
}

// incoming is every fake VM waiting for a migration in this process, by
// address, so that two fake drivers (two nodes of an in-process cluster)
// can migrate to each other.
var incoming = struct {
	sync.Mutex
	seq int
	m   map[string]incomingVM
}{m: map[string]incomingVM{}}

type incomingVM struct {
	d  *Driver
	id string
}

// Incoming implements compute.Migrator.
func (d *Driver) Incoming(ctx context.Context, id, host, from string, console []byte) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.get(id)
	if err != nil {
		return "", err
	}
	if v.addr != "" {
		return v.addr, nil
	}
	if v.status.State != compute.StateStopped {
		return "", fmt.Errorf("%w: %s already runs here", compute.ErrInvalidState, id)
	}
	incoming.Lock()
	incoming.seq++
	v.addr = fmt.Sprintf("fake:%s:%d", host, incoming.seq)
	incoming.m[v.addr] = incomingVM{d: d, id: id}
	incoming.Unlock()
	v.console = append([]byte(nil), console...)
	v.status = compute.Status{ID: id, State: compute.StateIncoming, PID: 100000 + rand.IntN(900000), StartedAt: time.Now()}
	return v.addr, nil
}

// MigrateTo implements compute.Migrator.
func (d *Driver) MigrateTo(ctx context.Context, id, addr string) error {
	d.mu.Lock()
	v, err := d.get(id)
	if err != nil {
		d.mu.Unlock()
		return err
	}
	switch v.status.State {
	case compute.StateMigrated:
		d.mu.Unlock()
		return nil
	case compute.StateRunning:
	default:
		d.mu.Unlock()
		return fmt.Errorf("%w: %s is %s", compute.ErrInvalidState, id, v.status.State)
	}
	console := append([]byte(nil), v.console...)
	d.mu.Unlock()

	incoming.Lock()
	dst, ok := incoming.m[addr]
	delete(incoming.m, addr)
	incoming.Unlock()
	if !ok || dst.id != id {
		return fmt.Errorf("%w: nothing waits for %s at %s", compute.ErrMigrationFailed, id, addr)
	}
	dst.d.mu.Lock()
	if w, ok := dst.d.vms[id]; ok && w.status.State == compute.StateIncoming {
		w.status.State = compute.StateRunning
		w.console = append(console, "fake: migrated\n"...)
	}
	dst.d.mu.Unlock()

	d.mu.Lock()
	if v, ok := d.vms[id]; ok {
		v.status.State = compute.StateMigrated
	}
	d.mu.Unlock()
	return nil
}

// Resume implements compute.Migrator.
func (d *Driver) Resume(ctx context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.get(id)
	if err != nil {
		return err
	}
	switch v.status.State {
	case compute.StateMigrated:
		v.status.State = compute.StateRunning
	case compute.StateRunning:
	default:
		return fmt.Errorf("%w: %s is %s", compute.ErrInvalidState, id, v.status.State)
	}
	return nil
}
