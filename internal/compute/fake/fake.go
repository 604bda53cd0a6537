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
}

var _ compute.Hypervisor = (*Driver)(nil)

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
	if v.status.State == compute.StateRunning {
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
