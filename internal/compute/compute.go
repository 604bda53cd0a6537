// Package compute defines the hypervisor driver interface that the node agent
// uses to run virtual machines, and the values that cross it. Drivers live in
// sub-packages (qemu, fake); computetest holds the conformance suite every
// driver must pass.
package compute

import (
	"context"
	"errors"
	"time"
)

// Domain errors returned by drivers. Callers match them with errors.Is.
var (
	// ErrNotFound: the driver knows no instance with that ID.
	ErrNotFound = errors.New("instance not found")
	// ErrExists: Create was called for an ID the driver already holds
	// with a different spec.
	ErrExists = errors.New("instance already exists")
	// ErrInvalidState: the operation does not apply in the current state
	// (for example Reboot of a stopped VM).
	ErrInvalidState = errors.New("invalid state for operation")
	// ErrInvalidSpec: the spec cannot be run (missing kernel and disk, bad sizes).
	ErrInvalidSpec = errors.New("invalid instance spec")
)

// State is the observed power state of a VM on its host.
type State string

const (
	// StateStopped: the VM exists (disk and config) but no VM process runs.
	StateStopped State = "stopped"
	// StateRunning: the VM process is up.
	StateRunning State = "running"
	// StateIncoming: the VM process is up and waiting for the state of a
	// VM migrating to this host (Migrator.Incoming); it runs once the
	// migration completes.
	StateIncoming State = "incoming"
	// StateMigrated: the VM handed its state over to another host
	// (Migrator.MigrateTo) and is paused here until Delete.
	StateMigrated State = "migrated"
)

// NIC is one network interface of a VM. The tap device is created and attached
// to its bridge by the network layer before Start; the driver only opens it.
type NIC struct {
	MAC string // "52:54:00:xx:xx:xx"
	Tap string // host tap device name
}

// Spec describes a VM. It is persisted by the driver at Create so that a
// restarted agent can start, stop and delete VMs it did not create itself.
type Spec struct {
	ID        string // instance ID, "i-0123456789abcdef0"
	VCPUs     int
	MemoryMiB int

	// Direct kernel boot when Kernel is set (Initrd optional); firmware boot
	// from the root disk otherwise.
	Kernel  string // absolute path to an (uncompressed or bz) kernel image
	Initrd  string // absolute path to an initrd, or ""
	Cmdline string // kernel command line (direct boot only)

	// BaseImage is the node's cached, read-only base disk; the driver puts a
	// per-instance qcow2 copy-on-write overlay over it. Empty: no root disk.
	BaseImage  string
	BaseFormat string // "qcow2" or "raw"
	// DiskSizeMiB grows the overlay beyond the base size (0: base size).
	DiskSizeMiB int

	// Machine selects the machine type: "microvm" (direct boot only),
	// "q35", or "" for the driver's choice.
	Machine string

	NICs []NIC

	// SMBIOSSerial and SMBIOSUUID, if set, are the SMBIOS type 1 system
	// serial number and UUID (firmware-booted machines only). cloud-init's
	// ds-identify takes a machine whose UUID and serial both start with
	// "ec2" and are equal for AWS, and then uses the EC2 datasource with
	// IMDSv2.
	SMBIOSSerial string
	SMBIOSUUID   string
	// SeedImage, if set, is attached read-only as an extra disk (a cidata ISO).
	SeedImage string
}

// Status is what a driver observes of one VM.
type Status struct {
	ID        string
	State     State
	PID       int       // VM process ID while running, else 0
	StartedAt time.Time // when the current VM process started (zero if stopped)
	// ExitReason says why the VM process last ended, when it ended on its
	// own or failed: "guest powered off", "qemu exited: status 1: <stderr tail>".
	ExitReason string
}

// Hypervisor runs VMs on one host. Every method is safe for concurrent use
// on different IDs and idempotent where the doc says so.
type Hypervisor interface {
	// Name is the driver name ("qemu", "fake").
	Name() string
	// Create prepares a VM (overlay disk, persisted spec) without starting it.
	// Creating an ID that exists with an equal spec is a no-op.
	Create(ctx context.Context, spec Spec) error
	// Start boots a stopped VM and returns once its process is up.
	// Starting a running VM is a no-op.
	Start(ctx context.Context, id string) error
	// Stop asks the guest to power off, waits up to grace, then ends the
	// VM process. Stopping a stopped VM is a no-op.
	Stop(ctx context.Context, id string, grace time.Duration) error
	// Reboot resets a running VM (ErrInvalidState when stopped).
	Reboot(ctx context.Context, id string) error
	// Delete ends the VM process if any and removes everything Create made.
	// Deleting an unknown ID is a no-op.
	Delete(ctx context.Context, id string) error
	// Status reports one VM (ErrNotFound if unknown).
	Status(ctx context.Context, id string) (Status, error)
	// List reports every VM the driver holds on this host, including those
	// created by an earlier agent process (re-adoption).
	List(ctx context.Context) ([]Status, error)
	// Console returns the last max bytes of the VM's serial console log
	// (kept across stop/start and agent restarts until Delete).
	Console(ctx context.Context, id string, max int) ([]byte, error)
}

// Migrator is the optional ability to move a running VM to another host
// without stopping it (live migration). Both ends run the same driver; the
// destination has Created the VM with the same spec but for host-local
// parts (paths of the cached image, tap names).
type Migrator interface {
	// Incoming starts the created VM id waiting for its state, listening on
	// host, and returns the address the source sends it to. from names the
	// node the state comes from: a driver that authenticates nodes admits
	// no other ("" admits any node of the cluster). console seeds the VM's
	// console log (the output the guest printed on its old host).
	// Calling it again while the VM waits or after it arrived returns the
	// same address, unless nothing can reach the waiting VM any more (a
	// driver that carries the streams itself restarted before the state
	// arrived): then the VM waits afresh, at the address returned.
	Incoming(ctx context.Context, id, host, from string, console []byte) (addr string, err error)
	// MigrateTo copies the running VM's memory and device state to the
	// destination listening at addr, and returns once the destination has
	// all of it (it runs from then on); the VM here is left paused, in
	// StateMigrated, until Delete. A failed migration leaves it running.
	MigrateTo(ctx context.Context, id, addr string) error
	// Resume runs a VM in StateMigrated again, for when its destination
	// lost it (the move was called off after the copy). Resuming a
	// running VM is a no-op.
	Resume(ctx context.Context, id string) error
}

// ErrMigrationFailed wraps why a live migration did not complete.
var ErrMigrationFailed = errors.New("live migration failed")
