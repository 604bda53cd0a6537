package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/clipper-cloud/clipper/internal/compute"
)

// Live migration is QEMU's own: the destination runs the same command line
// with -incoming tcp:HOST:PORT and waits; the source's `migrate` copies
// memory while the guest runs, then pauses it for the last dirty pages and
// the device state, and the destination resumes it. Only VMs without a
// root disk move (direct kernel boot with an initrd): their whole state is
// memory. QEMU 7.2's disk copy during migration (block migration, and a
// mirror into an NBD export of the incoming VM) failed here, so a VM with a
// disk is refused rather than moved half.

// migratePoll is how often MigrateTo asks QEMU how far the copy is.
const migratePoll = 50 * time.Millisecond

// Movable reports whether a VM with this spec can be live-migrated.
func Movable(s compute.Spec) error {
	if s.BaseImage != "" || s.SeedImage != "" {
		return fmt.Errorf("%w: %s boots from a disk, and only VMs without one can move live", compute.ErrInvalidState, s.ID)
	}
	return nil
}

// Incoming implements compute.Migrator.
func (d *Driver) Incoming(ctx context.Context, id, host string, console []byte) (string, error) {
	defer d.lock(id)()
	s, err := d.loadSpec(id)
	if err != nil {
		return "", err
	}
	if err := Movable(s); err != nil {
		return "", err
	}
	if pid := d.livePID(id); pid > 0 {
		if b, err := os.ReadFile(d.path(id, incomingFile)); err == nil {
			return string(b), nil
		}
		return "", fmt.Errorf("%w: %s already runs here", compute.ErrInvalidState, id)
	}
	port, err := freePort(host)
	if err != nil {
		return "", err
	}
	addr := "tcp:" + net.JoinHostPort(host, strconv.Itoa(port))
	if len(console) > 0 {
		if err := os.WriteFile(d.path(id, consoleFile), console, 0o600); err != nil {
			return "", err
		}
	}
	if err := writeAtomic(d.path(id, incomingFile), []byte(addr)); err != nil {
		return "", err
	}
	if err := d.launch(ctx, s, "-incoming", addr); err != nil {
		os.Remove(d.path(id, incomingFile))
		return "", err
	}
	d.log.Info("VM waiting for a live migration", "instance", id, "addr", addr)
	return addr, nil
}

// freePort finds a TCP port free on host for QEMU to listen on. Another
// process may take it before QEMU does; QEMU then fails to start and the
// caller tries again.
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("qemu: no port for a migration on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// MigrateTo implements compute.Migrator.
func (d *Driver) MigrateTo(ctx context.Context, id, addr string) error {
	defer d.lock(id)()
	s, err := d.loadSpec(id)
	if err != nil {
		return err
	}
	if err := Movable(s); err != nil {
		return err
	}
	if !strings.HasPrefix(addr, "tcp:") {
		return fmt.Errorf("%w: bad destination %q", compute.ErrMigrationFailed, addr)
	}
	if d.livePID(id) == 0 {
		return fmt.Errorf("%w: %s is not running", compute.ErrInvalidState, id)
	}
	c, err := d.conn(ctx, id)
	if err != nil {
		return err
	}
	switch st, _ := d.runState(ctx, id); st {
	case "postmigrate":
		return nil // handed over already
	case "running", "paused":
	default:
		return fmt.Errorf("%w: %s is %s", compute.ErrInvalidState, id, st)
	}
	if _, err := c.Execute(ctx, "migrate", map[string]any{"uri": addr}); err != nil {
		return fmt.Errorf("%w: %v", compute.ErrMigrationFailed, err)
	}
	t := time.NewTicker(migratePoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			c.Execute(cctx, "migrate_cancel", nil)
			cancel()
			return fmt.Errorf("%w: %v", compute.ErrMigrationFailed, ctx.Err())
		case <-t.C:
		}
		raw, err := c.Execute(ctx, "query-migrate", nil)
		if err != nil {
			d.dropConn(id)
			return fmt.Errorf("%w: %v", compute.ErrMigrationFailed, err)
		}
		var m struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := json.Unmarshal(raw, &m); err != nil {
			return fmt.Errorf("%w: query-migrate: %v", compute.ErrMigrationFailed, err)
		}
		switch m.Status {
		case "completed":
			d.log.Info("VM migrated", "instance", id, "to", addr)
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("%w: %s", compute.ErrMigrationFailed, orWord(m.ErrorDesc, m.Status))
		}
	}
}

func orWord(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// Resume implements compute.Migrator.
func (d *Driver) Resume(ctx context.Context, id string) error {
	defer d.lock(id)()
	if _, err := d.loadSpec(id); err != nil {
		return err
	}
	if d.livePID(id) == 0 {
		return fmt.Errorf("%w: %s is not running", compute.ErrInvalidState, id)
	}
	st, err := d.runState(ctx, id)
	if err != nil {
		return err
	}
	if st != "postmigrate" {
		return nil
	}
	c, err := d.conn(ctx, id)
	if err != nil {
		return err
	}
	if _, err := c.Execute(ctx, "cont", nil); err != nil {
		return fmt.Errorf("qemu: resume %s: %w", id, err)
	}
	d.log.Info("VM resumed after a called-off move", "instance", id)
	return nil
}
