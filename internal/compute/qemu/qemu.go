// Package qemu is the real compute driver: one QEMU process per instance,
// daemonized so that VMs outlive the agent, controlled over QMP, with a
// qcow2 overlay over the node's cached base image and the serial console
// appended to a log file. State lives in StateDir/<id>/ so that a restarted
// agent adopts running VMs again.
package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/clipper-cloud/clipper/internal/compute"
	"github.com/clipper-cloud/clipper/internal/compute/qemu/qmp"
	"github.com/clipper-cloud/clipper/internal/undo"
)

// Files in an instance directory.
const (
	specFile    = "spec.json"
	overlayFile = "root.qcow2"
	consoleFile = "console.log"
	qmpFile     = "qmp.sock"
	pidFile     = "qemu.pid"
	reasonFile  = "exit-reason"
	// incomingFile holds the address a VM waiting for a live migration
	// listens on.
	incomingFile = "incoming"
)

// Config configures the driver.
type Config struct {
	StateDir    string
	QEMUPath    string // default qemu-system-x86_64
	QEMUImgPath string // default qemu-img
	Logger      *slog.Logger
	// CommandPrefix runs QEMU through another command, e.g.
	// ["ip", "netns", "exec", "ns1"] in tests.
	CommandPrefix []string
	// KVM says whether to use KVM; nil probes for a KVM that works.
	KVM *bool
	// MigrationTLS gives the node's credentials for live migrations: the
	// memory and disk streams between nodes then go over TLS, each side
	// proving itself with a certificate of the cluster's CA. Nil keeps
	// the streams plain TCP (tests, single-node clouds).
	MigrationTLS func() (MigrationTLS, error)
}

// Driver runs QEMU VMs.
type Driver struct {
	cfg Config
	log *slog.Logger
	kvm bool

	mu      sync.Mutex
	locks   map[string]*sync.Mutex
	conns   map[string]*qmp.Conn
	tunnels map[string][]*tunnel // of the moves under way, by VM
}

var (
	_ compute.Hypervisor = (*Driver)(nil)
	_ compute.Migrator   = (*Driver)(nil)
)

var idRE = regexp.MustCompile(`^[a-z]+-[0-9a-f]{1,32}$`)

// New returns a driver over StateDir.
func New(cfg Config) (*Driver, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("qemu: StateDir is required")
	}
	if cfg.QEMUPath == "" {
		cfg.QEMUPath = "qemu-system-x86_64"
	}
	if cfg.QEMUImgPath == "" {
		cfg.QEMUImgPath = "qemu-img"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	for _, p := range []*string{&cfg.QEMUPath, &cfg.QEMUImgPath} {
		abs, err := exec.LookPath(*p)
		if err != nil {
			return nil, fmt.Errorf("qemu: %s not found (apt-get install qemu-system-x86 qemu-utils): %w", *p, err)
		}
		*p = abs
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	kvm := false
	if cfg.KVM != nil {
		kvm = *cfg.KVM
	} else {
		kvm = probeKVM(cfg.QEMUPath, cfg.Logger)
	}
	return &Driver{cfg: cfg, log: cfg.Logger.With("driver", "qemu"), kvm: kvm,
		locks: map[string]*sync.Mutex{}, conns: map[string]*qmp.Conn{}, tunnels: map[string][]*tunnel{}}, nil
}

// Name implements compute.Hypervisor.
func (d *Driver) Name() string { return "qemu" }

// lock serialises operations on one VM.
func (d *Driver) lock(id string) func() {
	d.mu.Lock()
	l, ok := d.locks[id]
	if !ok {
		l = &sync.Mutex{}
		d.locks[id] = l
	}
	d.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func (d *Driver) dir(id string) string { return filepath.Join(d.cfg.StateDir, id) }

func (d *Driver) path(id, name string) string { return filepath.Join(d.dir(id), name) }

func validate(s compute.Spec) error {
	switch {
	case !idRE.MatchString(s.ID):
		return fmt.Errorf("%w: bad instance ID %q", compute.ErrInvalidSpec, s.ID)
	case s.VCPUs <= 0 || s.MemoryMiB <= 0:
		return fmt.Errorf("%w: vCPUs and memory must be positive", compute.ErrInvalidSpec)
	case s.Kernel == "" && s.BaseImage == "":
		return fmt.Errorf("%w: neither a kernel nor a disk to boot", compute.ErrInvalidSpec)
	case s.Machine == "microvm" && s.Kernel == "":
		return fmt.Errorf("%w: microvm needs direct kernel boot", compute.ErrInvalidSpec)
	case s.Machine != "" && s.Machine != "microvm" && s.Machine != "q35":
		return fmt.Errorf("%w: machine %q", compute.ErrInvalidSpec, s.Machine)
	case s.BaseImage != "" && s.BaseFormat != "qcow2" && s.BaseFormat != "raw":
		return fmt.Errorf("%w: base image format %q", compute.ErrInvalidSpec, s.BaseFormat)
	}
	for _, f := range []string{s.Kernel, s.Initrd, s.BaseImage, s.SeedImage} {
		if f == "" {
			continue
		}
		if !filepath.IsAbs(f) || strings.ContainsAny(f, ",") {
			return fmt.Errorf("%w: %q must be an absolute path without commas", compute.ErrInvalidSpec, f)
		}
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%w: %v", compute.ErrInvalidSpec, err)
		}
	}
	return nil
}

func (d *Driver) loadSpec(id string) (compute.Spec, error) {
	var s compute.Spec
	b, err := os.ReadFile(d.path(id, specFile))
	if errors.Is(err, os.ErrNotExist) {
		return s, fmt.Errorf("%w: %s", compute.ErrNotFound, id)
	}
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("qemu: %s: corrupt spec: %w", id, err)
	}
	return s, nil
}

// Create implements compute.Hypervisor.
func (d *Driver) Create(ctx context.Context, s compute.Spec) error {
	if err := validate(s); err != nil {
		return err
	}
	defer d.lock(s.ID)()
	if old, err := d.loadSpec(s.ID); err == nil {
		if reflect.DeepEqual(old, s) {
			return nil
		}
		return fmt.Errorf("%w: %s with a different spec", compute.ErrExists, s.ID)
	}
	u := undo.New()
	defer u.Run()
	if err := os.MkdirAll(d.dir(s.ID), 0o700); err != nil {
		return err
	}
	u.Add(func() { os.RemoveAll(d.dir(s.ID)) })
	if s.BaseImage != "" {
		args := []string{"create", "-q", "-f", "qcow2", "-F", s.BaseFormat, "-b", s.BaseImage, d.path(s.ID, overlayFile)}
		if s.DiskSizeMiB > 0 {
			args = append(args, fmt.Sprintf("%dM", s.DiskSizeMiB))
		}
		if out, err := exec.CommandContext(ctx, d.cfg.QEMUImgPath, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("qemu-img create: %v: %s", err, strings.TrimSpace(string(out)))
		}
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := writeAtomic(d.path(s.ID, specFile), b); err != nil {
		return err
	}
	u.Success()
	return nil
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Start implements compute.Hypervisor.
func (d *Driver) Start(ctx context.Context, id string) error {
	defer d.lock(id)()
	s, err := d.loadSpec(id)
	if err != nil {
		return err
	}
	if pid := d.livePID(id); pid > 0 {
		st, _ := d.runState(ctx, id)
		if st == "inmigrate" {
			// The source is done; the state may still be loading here.
			st = d.waitLoaded(ctx, id)
		}
		if st == "paused" && d.waitingIncoming(id, st) {
			return d.finishIncoming(ctx, id) // arrived by migration
		}
		if st != "shutdown" {
			return nil
		}
		d.quit(ctx, id, pid, "guest powered off")
	}
	os.Remove(d.path(id, incomingFile))
	return d.launch(ctx, s)
}

// launch runs QEMU for s with extra arguments and returns once its process
// is up.
func (d *Driver) launch(ctx context.Context, s compute.Spec, extra ...string) error {
	id := s.ID
	os.Remove(d.path(id, reasonFile))
	os.Remove(d.path(id, qmpFile))
	argv := append(append([]string{}, d.cfg.CommandPrefix...), d.cfg.QEMUPath)
	argv = append(argv, d.args(s)...)
	argv = append(argv, extra...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	// With -daemonize the command returns once QEMU is initialised; the
	// VM process itself is reparented away from the agent.
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 400 {
			msg = msg[len(msg)-400:]
		}
		reason := fmt.Sprintf("qemu failed to start: %v: %s", err, msg)
		writeAtomic(d.path(id, reasonFile), []byte(reason))
		return errors.New(reason)
	}
	pid := d.livePID(id)
	if pid == 0 {
		return fmt.Errorf("qemu started but its process is gone: %s", strings.TrimSpace(stderr.String()))
	}
	d.log.Info("VM started", "instance", id, "pid", pid, "kvm", d.kvm)
	return nil
}

// Stop implements compute.Hypervisor.
func (d *Driver) Stop(ctx context.Context, id string, grace time.Duration) error {
	defer d.lock(id)()
	if _, err := d.loadSpec(id); err != nil {
		return err
	}
	return d.stop(ctx, id, grace)
}

// powerdownRepeat is how often stop presses the power button again.
const powerdownRepeat = 3 * time.Second

// stop powers a VM down: ACPI power button, wait up to grace for the guest,
// then quit over QMP, then SIGKILL.
func (d *Driver) stop(ctx context.Context, id string, grace time.Duration) error {
	pid := d.livePID(id)
	if pid == 0 {
		return nil
	}
	reason := "stopped by force: no graceful stop asked"
	if grace > 0 {
		reason = fmt.Sprintf("stopped by force: the guest did not power off within %s", grace)
		if c, err := d.conn(ctx, id); err == nil {
			if _, err := c.Execute(ctx, "system_powerdown", nil); err == nil {
				// A guest still booting has no one listening to the button
				// yet, so it is pressed again every few seconds.
				deadline := time.Now().Add(grace)
				press := time.Now().Add(powerdownRepeat)
				for time.Now().Before(deadline) && ctx.Err() == nil {
					st, err := d.runState(ctx, id)
					if err != nil {
						reason = "stopped by force: QMP stopped answering: " + err.Error()
						break
					}
					if st == "shutdown" {
						reason = "guest powered off"
						break
					}
					if time.Now().After(press) {
						c.Execute(ctx, "system_powerdown", nil)
						press = time.Now().Add(powerdownRepeat)
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		}
	}
	d.quit(ctx, id, pid, reason)
	return nil
}

// quit ends the QEMU process and records why.
func (d *Driver) quit(ctx context.Context, id string, pid int, reason string) {
	d.closeTunnels(id)
	writeAtomic(d.path(id, reasonFile), []byte(reason))
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	if c, err := d.conn(qctx, id); err == nil {
		c.Execute(qctx, "quit", nil)
	}
	cancel()
	d.dropConn(id)
	if !waitGone(pid, id, 5*time.Second) {
		d.log.Warn("QEMU did not quit; killing it", "instance", id, "pid", pid)
		killPID(pid)
		waitGone(pid, id, 5*time.Second)
	}
	os.Remove(d.path(id, pidFile))
}

// Reboot implements compute.Hypervisor.
func (d *Driver) Reboot(ctx context.Context, id string) error {
	defer d.lock(id)()
	if _, err := d.loadSpec(id); err != nil {
		return err
	}
	if d.livePID(id) == 0 {
		return fmt.Errorf("%w: %s is not running", compute.ErrInvalidState, id)
	}
	if st, _ := d.runState(ctx, id); st == "shutdown" {
		return fmt.Errorf("%w: %s has powered off", compute.ErrInvalidState, id)
	}
	c, err := d.conn(ctx, id)
	if err != nil {
		return err
	}
	if _, err := c.Execute(ctx, "system_reset", nil); err != nil {
		d.dropConn(id)
		return fmt.Errorf("qemu: reset %s: %w", id, err)
	}
	return nil
}

// Delete implements compute.Hypervisor.
func (d *Driver) Delete(ctx context.Context, id string) error {
	defer d.lock(id)()
	if _, err := os.Stat(d.dir(id)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := d.stop(ctx, id, 0); err != nil {
		return err
	}
	d.closeTunnels(id)
	if err := os.RemoveAll(d.dir(id)); err != nil {
		return fmt.Errorf("qemu: remove %s: %w", id, err)
	}
	d.log.Info("VM deleted", "instance", id)
	return nil
}

// Status implements compute.Hypervisor.
func (d *Driver) Status(ctx context.Context, id string) (compute.Status, error) {
	if _, err := d.loadSpec(id); err != nil {
		return compute.Status{}, err
	}
	return d.status(ctx, id), nil
}

func (d *Driver) status(ctx context.Context, id string) compute.Status {
	st := compute.Status{ID: id, State: compute.StateStopped}
	if pid := d.livePID(id); pid > 0 {
		rs, err := d.runState(ctx, id)
		if err == nil && rs == "shutdown" {
			// The guest powered off; QEMU waits (-no-shutdown) so we can
			// tell that from a crash. End it now.
			if unlock := d.tryLock(id); unlock != nil {
				d.quit(ctx, id, pid, "guest powered off")
				unlock()
			}
		} else {
			st.State, st.PID, st.StartedAt = compute.StateRunning, pid, processStart(pid)
			switch {
			case d.waitingIncoming(id, rs):
				st.State = compute.StateIncoming
			case rs == "postmigrate":
				st.State = compute.StateMigrated
			}
			return st
		}
	}
	if b, err := os.ReadFile(d.path(id, reasonFile)); err == nil {
		st.ExitReason = string(b)
	} else if _, err := os.Stat(d.path(id, pidFile)); err == nil {
		st.ExitReason = "qemu exited unexpectedly"
	}
	return st
}

func (d *Driver) tryLock(id string) func() {
	d.mu.Lock()
	l, ok := d.locks[id]
	if !ok {
		l = &sync.Mutex{}
		d.locks[id] = l
	}
	d.mu.Unlock()
	if l.TryLock() {
		return l.Unlock
	}
	return nil
}

// List implements compute.Hypervisor.
func (d *Driver) List(ctx context.Context) ([]compute.Status, error) {
	entries, err := os.ReadDir(d.cfg.StateDir)
	if err != nil {
		return nil, err
	}
	var out []compute.Status
	for _, e := range entries {
		if !e.IsDir() || !idRE.MatchString(e.Name()) {
			continue
		}
		if _, err := os.Stat(d.path(e.Name(), specFile)); err != nil {
			continue
		}
		out = append(out, d.status(ctx, e.Name()))
	}
	return out, nil
}

// Console implements compute.Hypervisor.
func (d *Driver) Console(ctx context.Context, id string, max int) ([]byte, error) {
	if _, err := d.loadSpec(id); err != nil {
		return nil, err
	}
	f, err := os.Open(d.path(id, consoleFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max64(st.Size()-int64(max), 0)
	buf := make([]byte, st.Size()-off)
	n, err := f.ReadAt(buf, off)
	if err != nil && n == 0 && len(buf) > 0 {
		return nil, err
	}
	return buf[:n], nil
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// conn returns a QMP session to the VM, dialing if needed.
func (d *Driver) conn(ctx context.Context, id string) (*qmp.Conn, error) {
	d.mu.Lock()
	c, ok := d.conns[id]
	d.mu.Unlock()
	if ok {
		return c, nil
	}
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := qmp.Dial(dctx, d.path(id, qmpFile))
	if err != nil {
		return nil, fmt.Errorf("qemu: QMP %s: %w", id, err)
	}
	d.mu.Lock()
	if old, ok := d.conns[id]; ok {
		c.Close()
		c = old
	} else {
		d.conns[id] = c
	}
	d.mu.Unlock()
	return c, nil
}

func (d *Driver) dropConn(id string) {
	d.mu.Lock()
	if c, ok := d.conns[id]; ok {
		c.Close()
		delete(d.conns, id)
	}
	d.mu.Unlock()
}

// runState asks QEMU for the run state, redialing once on a broken session.
func (d *Driver) runState(ctx context.Context, id string) (string, error) {
	qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	for attempt := 0; attempt < 2; attempt++ {
		c, err := d.conn(qctx, id)
		if err != nil {
			return "", err
		}
		st, err := c.Status(qctx)
		if err == nil {
			return st, nil
		}
		d.dropConn(id)
	}
	return "", fmt.Errorf("qemu: no QMP answer from %s", id)
}
