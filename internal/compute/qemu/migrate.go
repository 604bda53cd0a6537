package qemu

import (
	"cmp"
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

// Live migration is QEMU's own. The destination runs the same command line
// with -incoming and waits; the source's `migrate` copies memory while the
// guest runs, then pauses it for the last dirty pages and the device state.
//
// A VM without a root disk (direct kernel boot) is all memory: the
// destination listens with -incoming tcp:HOST:PORT and resumes the guest
// as soon as the state is in.
//
// A VM with a root disk also needs the blocks its qcow2 overlay holds (the
// base image is cached on both nodes). The destination starts paused (-S)
// with an empty overlay over the same base and exports it, writable, over
// NBD from inside its own QEMU, so what arrives goes through the block
// layer that will run the guest. The source mirrors its overlay's
// allocated blocks there (drive-mirror, sync=top), and once the mirror
// keeps up (ready) migrates the memory; when that is done the guest is
// paused, and completing the mirror flushes the last writes. The
// destination then stops exporting and resumes when told to (Start):
// after the controller handed it the instance.
//
// The address the destination gives the source reads "tcp:HOST:PORT" or,
// with a disk, "tcp:HOST:PORT nbd:HOST:PORT". With the node's TLS
// credentials (Config.MigrationTLS) both streams are encrypted, and the
// address starts with "tls:NAME", the destination's name, which its
// certificate must carry (see MigrationTLS).

// migratePoll is how often MigrateTo asks QEMU how far the copy is.
const migratePoll = 50 * time.Millisecond

// rootDrive is the drive ID of the root disk (args.go), and the NBD export
// name of a destination's overlay.
const rootDrive = "root"

// mirrorJob is the block job ID of a migration's disk mirror.
const mirrorJob = "move-root"

// movable reports whether a VM with this spec can be live-migrated.
func movable(s compute.Spec) error {
	if s.SeedImage != "" {
		return fmt.Errorf("%w: %s has a seed disk, which does not move", compute.ErrInvalidState, s.ID)
	}
	return nil
}

// Incoming implements compute.Migrator.
func (d *Driver) Incoming(ctx context.Context, id, host, from string, console []byte) (string, error) {
	defer d.lock(id)()
	s, err := d.loadSpec(id)
	if err != nil {
		return "", err
	}
	if err := movable(s); err != nil {
		return "", err
	}
	if pid := d.livePID(id); pid > 0 {
		b, err := os.ReadFile(d.path(id, incomingFile))
		if err != nil {
			return "", fmt.Errorf("%w: %s already runs here", compute.ErrInvalidState, id)
		}
		dest, _ := parseAddr(string(b))
		st, _ := d.runState(ctx, id)
		if dest.tlsName == "" || d.hasTunnels(id) || st != "inmigrate" {
			return string(b), nil
		}
		// It waits behind tunnels that ended with the driver that made
		// them (the agent restarted), so nothing can reach it: start it
		// again. A VM that has received its state is kept: its source
		// has let go.
		d.quit(ctx, id, pid, "its migration's listener is gone")
		os.Remove(d.path(id, incomingFile))
	}
	if len(console) > 0 {
		if err := os.WriteFile(d.path(id, consoleFile), console, 0o600); err != nil {
			return "", err
		}
	}
	// The ports are free when picked; another process may take one before
	// QEMU binds it, so a failed start tries other ports.
	var addr string
	for attempt := 0; ; attempt++ {
		addr, err = d.startIncoming(ctx, s, host, from)
		if err == nil || attempt == 2 || ctx.Err() != nil {
			break
		}
		d.log.Warn("VM could not wait for a migration; trying other ports", "instance", id, "error", err)
	}
	if err != nil {
		return "", err
	}
	d.log.Info("VM waiting for a live migration", "instance", id, "addr", addr)
	return addr, nil
}

// startIncoming picks the ports and starts the VM waiting on them. With
// the node's TLS credentials QEMU listens on unix sockets in the VM's
// directory, behind the driver's TLS tunnels, which admit only node from
// (any node of the cluster if "").
func (d *Driver) startIncoming(ctx context.Context, s compute.Spec, host, from string) (addr string, err error) {
	id := s.ID
	m, err := d.migrationTLS()
	if err != nil {
		return "", err
	}
	disk := s.BaseImage != ""
	var (
		dest    destination
		listen  string         // the migration URI QEMU listens on
		nbdAddr map[string]any // where QEMU exports the disk
		tunnels []*tunnel
	)
	defer func() {
		if err != nil {
			for _, t := range tunnels {
				t.Close()
			}
		}
	}()
	// endpoint returns what QEMU listens on and the node's host:port for
	// one stream.
	endpoint := func(sockName string) (sock, hostPort string, err error) {
		if m == nil {
			port, err := freePort(host)
			return "", net.JoinHostPort(host, strconv.Itoa(port)), err
		}
		if sock, err = d.sock(id, sockName); err != nil {
			return "", "", err
		}
		os.Remove(sock)
		t, port, err := d.tunnelIn(host, sock, from, m)
		if err != nil {
			return "", "", err
		}
		tunnels = append(tunnels, t)
		return sock, net.JoinHostPort(host, strconv.Itoa(port)), nil
	}
	sock, hostPort, err := endpoint(sockIn)
	if err != nil {
		return "", err
	}
	dest.uri, listen = "tcp:"+hostPort, "tcp:"+hostPort
	if m != nil {
		dest.tlsName, listen = m.name, "unix:"+sock
	}
	extra := []string{"-incoming", listen}
	if disk {
		nsock, nHostPort, err := endpoint(sockInNBD)
		if err != nil {
			return "", err
		}
		dest.nbd = nHostPort
		if m != nil {
			nbdAddr = map[string]any{"type": "unix", "data": map[string]any{"path": nsock}}
		} else {
			h, p, _ := net.SplitHostPort(nHostPort)
			nbdAddr = map[string]any{"type": "inet", "data": map[string]any{"host": h, "port": p}}
		}
		extra = []string{"-incoming", "defer", "-S"}
	}
	addr = dest.String()
	if err := writeAtomic(d.path(id, incomingFile), []byte(addr)); err != nil {
		return "", err
	}
	if err := d.launch(ctx, s, extra...); err != nil {
		os.Remove(d.path(id, incomingFile))
		return "", err
	}
	if disk {
		if err := d.exportForIncoming(ctx, id, nbdAddr, listen); err != nil {
			d.quit(ctx, id, d.livePID(id), "could not wait for a migration: "+err.Error())
			os.Remove(d.path(id, incomingFile))
			return "", err
		}
	}
	d.setTunnels(id, tunnels)
	return addr, nil
}

// exportForIncoming exports the waiting VM's root disk over NBD at
// nbdAddr (a QMP SocketAddressLegacy) and starts listening for the
// migration at uri.
func (d *Driver) exportForIncoming(ctx context.Context, id string, nbdAddr map[string]any, uri string) error {
	c, err := d.conn(ctx, id)
	if err != nil {
		return err
	}
	for _, cmd := range []struct {
		name string
		args any
	}{
		{"nbd-server-start", map[string]any{"addr": nbdAddr}},
		{"nbd-server-add", map[string]any{"device": rootDrive, "writable": true}},
		{"migrate-incoming", map[string]any{"uri": uri}},
	} {
		if _, err := c.Execute(ctx, cmd.name, cmd.args); err != nil {
			return fmt.Errorf("qemu: %s: %w", cmd.name, err)
		}
	}
	return nil
}

// finishIncoming resumes a VM whose state and disk arrived: it stops the
// NBD export and lets the guest run. Called with the VM's lock held, for a
// VM that waits paused (runstate "paused" with the incoming file).
func (d *Driver) finishIncoming(ctx context.Context, id string) error {
	c, err := d.conn(ctx, id)
	if err != nil {
		return err
	}
	if _, err := c.Execute(ctx, "nbd-server-stop", nil); err != nil {
		d.log.Warn("stop the migration's NBD export", "instance", id, "error", err)
	}
	if _, err := c.Execute(ctx, "cont", nil); err != nil {
		return fmt.Errorf("qemu: resume %s after its migration: %w", id, err)
	}
	os.Remove(d.path(id, incomingFile))
	d.closeTunnels(id)
	d.log.Info("VM resumed after its migration", "instance", id)
	return nil
}

// loadTimeout bounds how long Start waits for a migration's destination
// to finish loading the state its source has sent.
const loadTimeout = 60 * time.Second

// waitLoaded waits while the VM is still loading an incoming migration
// and returns its run state after (or when the wait ends).
func (d *Driver) waitLoaded(ctx context.Context, id string) string {
	ctx, cancel := context.WithTimeout(ctx, loadTimeout)
	defer cancel()
	st := "inmigrate"
	d.poll(ctx, func() (bool, error) {
		var err error
		st, err = d.runState(ctx, id)
		return err != nil || st != "inmigrate", nil
	}, nil)
	return st
}

// waitingIncoming reports whether a live VM is a migration's destination
// that has not run yet: still receiving, or received and paused until
// Start.
func (d *Driver) waitingIncoming(id, runState string) bool {
	if runState == "inmigrate" {
		return true
	}
	if runState != "paused" {
		return false
	}
	_, err := os.Stat(d.path(id, incomingFile))
	return err == nil
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

// destination is where a VM waits for a migration: the migration URI,
// the NBD export of its disk (host:port, "" without a disk), and the name
// its certificate must carry ("" when the streams are plain TCP). It
// reads "[tls:NAME] tcp:HOST:PORT [nbd:HOST:PORT]".
type destination struct {
	tlsName, uri, nbd string
}

func (a destination) String() string {
	var f []string
	if a.tlsName != "" {
		f = append(f, "tls:"+a.tlsName)
	}
	f = append(f, a.uri)
	if a.nbd != "" {
		f = append(f, "nbd:"+a.nbd)
	}
	return strings.Join(f, " ")
}

// parseAddr reads a destination's address.
func parseAddr(addr string) (destination, error) {
	var dest destination
	f := strings.Fields(addr)
	bad := fmt.Errorf("%w: bad destination %q", compute.ErrMigrationFailed, addr)
	if len(f) > 0 {
		if name, ok := strings.CutPrefix(f[0], "tls:"); ok {
			if name == "" {
				return dest, bad
			}
			dest.tlsName, f = name, f[1:]
		}
	}
	if len(f) == 0 || len(f) > 2 || !strings.HasPrefix(f[0], "tcp:") || len(f[0]) == len("tcp:") {
		return dest, bad
	}
	dest.uri = f[0]
	if len(f) == 2 {
		var ok bool
		if dest.nbd, ok = strings.CutPrefix(f[1], "nbd:"); !ok || dest.nbd == "" {
			return dest, bad
		}
	}
	return dest, nil
}

// MigrateTo implements compute.Migrator.
func (d *Driver) MigrateTo(ctx context.Context, id, addr string) error {
	defer d.lock(id)()
	s, err := d.loadSpec(id)
	if err != nil {
		return err
	}
	if err := movable(s); err != nil {
		return err
	}
	dest, err := parseAddr(addr)
	if err != nil {
		return err
	}
	disk := s.BaseImage != ""
	if disk && dest.nbd == "" {
		return fmt.Errorf("%w: the destination exports no disk", compute.ErrMigrationFailed)
	}
	m, err := d.migrationTLS()
	switch {
	case err != nil:
		return fmt.Errorf("%w: %v", compute.ErrMigrationFailed, err)
	case m != nil && dest.tlsName == "":
		return fmt.Errorf("%w: this node moves instances over TLS only, and the destination offers plain TCP", compute.ErrMigrationFailed)
	case m == nil && dest.tlsName != "":
		return fmt.Errorf("%w: the destination wants TLS, and this node has no credentials for it", compute.ErrMigrationFailed)
	}
	if d.livePID(id) == 0 {
		return fmt.Errorf("%w: %s is not running", compute.ErrInvalidState, id)
	}
	switch st, _ := d.runState(ctx, id); st {
	case "postmigrate":
		return nil // handed over already
	case "running", "paused":
	default:
		return fmt.Errorf("%w: %s is %s", compute.ErrInvalidState, id, st)
	}
	uri, nbdTarget := dest.uri, "nbd://"+dest.nbd+"/"+rootDrive
	var tunnels []*tunnel
	defer func() {
		for _, t := range tunnels {
			t.Close()
		}
	}()
	// failed adds what the tunnels saw to QEMU's word on a failure.
	failed := func(err error) error {
		for _, t := range tunnels {
			if terr := t.lastError(); terr != nil {
				return fmt.Errorf("%w (%v)", err, terr)
			}
		}
		return err
	}
	if m != nil {
		// QEMU sends to unix sockets here, the tunnels to the destination.
		out := func(name, hostPort string) (string, error) {
			sock, err := d.sock(id, name)
			if err != nil {
				return "", err
			}
			t, err := d.tunnelOut(sock, hostPort, dest.tlsName, m)
			if err != nil {
				return "", fmt.Errorf("%w: %v", compute.ErrMigrationFailed, err)
			}
			tunnels = append(tunnels, t)
			return sock, nil
		}
		sock, err := out(sockOut, strings.TrimPrefix(dest.uri, "tcp:"))
		if err != nil {
			return err
		}
		uri = "unix:" + sock
		if disk {
			nsock, err := out(sockOutNBD, dest.nbd)
			if err != nil {
				return err
			}
			nbdTarget = "nbd+unix:///" + rootDrive + "?socket=" + nsock
		}
	}
	if disk {
		if err := d.mirrorTo(ctx, id, nbdTarget); err != nil {
			d.cancelMirror(ctx, id, true)
			return failed(err)
		}
	}
	if err := d.migrate(ctx, id, uri); err != nil {
		if disk {
			d.cancelMirror(ctx, id, true)
		}
		return failed(err)
	}
	if disk {
		// The guest is paused: completing the mirror flushes what it wrote
		// last to the destination.
		if err := d.cancelMirror(ctx, id, false); err != nil {
			return fmt.Errorf("%w: finish the disk copy: %v", compute.ErrMigrationFailed, err)
		}
	}
	// QEMU calls the migration complete once it has written the last
	// bytes to its socket; through a tunnel they may still be on the
	// way. The move is done when the streams ended on both sides.
	for _, t := range tunnels {
		if !t.drain(tunnelDrainTimeout) {
			return failed(fmt.Errorf("%w: the streams did not end within %s", compute.ErrMigrationFailed, tunnelDrainTimeout))
		}
	}
	d.log.Info("VM migrated", "instance", id, "to", addr)
	return nil
}

// migrate copies the VM's memory and device state to uri and waits until
// the copy is complete.
func (d *Driver) migrate(ctx context.Context, id, uri string) error {
	c, err := d.conn(ctx, id)
	if err != nil {
		return err
	}
	if _, err := c.Execute(ctx, "migrate", map[string]any{"uri": uri}); err != nil {
		return fmt.Errorf("%w: %v", compute.ErrMigrationFailed, err)
	}
	return d.poll(ctx, func() (bool, error) {
		raw, err := c.Execute(ctx, "query-migrate", nil)
		if err != nil {
			d.dropConn(id)
			return false, fmt.Errorf("%w: %v", compute.ErrMigrationFailed, err)
		}
		var m struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := json.Unmarshal(raw, &m); err != nil {
			return false, fmt.Errorf("%w: query-migrate: %v", compute.ErrMigrationFailed, err)
		}
		switch m.Status {
		case "completed":
			return true, nil
		case "failed", "cancelled":
			return false, fmt.Errorf("%w: %s", compute.ErrMigrationFailed, cmp.Or(m.ErrorDesc, m.Status))
		}
		return false, nil
	}, func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		c.Execute(cctx, "migrate_cancel", nil)
		cancel()
	})
}

// mirrorTo starts copying the root overlay's blocks to the destination's
// NBD export (target, an NBD URI) and waits until the mirror keeps up
// with the guest's writes.
func (d *Driver) mirrorTo(ctx context.Context, id, target string) error {
	c, err := d.conn(ctx, id)
	if err != nil {
		return err
	}
	if _, err := c.Execute(ctx, "drive-mirror", map[string]any{"device": rootDrive, "job-id": mirrorJob,
		"target": target, "sync": "top", "mode": "existing", "format": "raw"}); err != nil {
		return fmt.Errorf("%w: start the disk copy: %v", compute.ErrMigrationFailed, err)
	}
	return d.poll(ctx, func() (bool, error) {
		job, found, err := d.mirrorStatus(ctx, id)
		switch {
		case err != nil:
			return false, err
		case !found:
			return false, fmt.Errorf("%w: the disk copy ended early", compute.ErrMigrationFailed)
		case job.Error != "":
			return false, fmt.Errorf("%w: disk copy: %s", compute.ErrMigrationFailed, job.Error)
		}
		return job.Ready, nil
	}, nil)
}

type blockJob struct {
	Device string `json:"device"`
	Ready  bool   `json:"ready"`
	Status string `json:"status"`
	Error  string `json:"error"`
}

func (d *Driver) mirrorStatus(ctx context.Context, id string) (blockJob, bool, error) {
	c, err := d.conn(ctx, id)
	if err != nil {
		return blockJob{}, false, err
	}
	raw, err := c.Execute(ctx, "query-block-jobs", nil)
	if err != nil {
		return blockJob{}, false, fmt.Errorf("%w: query-block-jobs: %v", compute.ErrMigrationFailed, err)
	}
	var jobs []blockJob
	if err := json.Unmarshal(raw, &jobs); err != nil {
		return blockJob{}, false, fmt.Errorf("%w: query-block-jobs: %v", compute.ErrMigrationFailed, err)
	}
	for _, j := range jobs {
		if j.Device == mirrorJob {
			return j, true, nil
		}
	}
	return blockJob{}, false, nil
}

// cancelMirror ends the disk mirror: a ready mirror completes (its last
// writes reach the destination) unless force, which drops it at once. It
// waits until the job is gone.
func (d *Driver) cancelMirror(ctx context.Context, id string, force bool) error {
	c, err := d.conn(ctx, id)
	if err != nil {
		return err
	}
	if _, found, _ := d.mirrorStatus(ctx, id); !found {
		return nil
	}
	if _, err := c.Execute(ctx, "block-job-cancel", map[string]any{"device": mirrorJob, "force": force}); err != nil {
		return err
	}
	return d.poll(ctx, func() (bool, error) {
		_, found, err := d.mirrorStatus(ctx, id)
		return !found, err
	}, nil)
}

// poll calls check until it says done or fails, or ctx ends (then onCancel
// runs, if set).
func (d *Driver) poll(ctx context.Context, check func() (bool, error), onCancel func()) error {
	t := time.NewTicker(migratePoll)
	defer t.Stop()
	for {
		done, err := check()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			if onCancel != nil {
				onCancel()
			}
			return fmt.Errorf("%w: %v", compute.ErrMigrationFailed, ctx.Err())
		case <-t.C:
		}
	}
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
