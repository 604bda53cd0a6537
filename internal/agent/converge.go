package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/clipper-cloud/clipper/internal/compute"
	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

// defaultCmdline is used for direct-boot images that carry none.
const defaultCmdline = "console=ttyS0 quiet"

// converge brings one instance to its desired state. It returns what it then
// observes, whether the instance is gone for good, and an error worth a
// retry (failures the controller must act on are reported as ObsFailed).
func (a *Agent) converge(ctx context.Context, d nodeproto.DesiredInstance) (obs nodeproto.ObservedInstance, gone bool, err error) {
	obs = nodeproto.ObservedInstance{ID: d.ID, RebootSeq: d.RebootSeq}
	log := a.log.With("instance", d.ID)
	switch d.Power {
	case model.PowerAbsent:
		if err := a.cfg.Driver.Delete(ctx, d.ID); err != nil {
			return a.observe(ctx, d.ID, obs), false, fmt.Errorf("delete VM: %w", err)
		}
		a.cfg.Metadata.Remove(d.ID)
		a.attached.Delete(d.ID)
		if err := a.cfg.Network.Detach(ctx, d.ID); err != nil {
			return a.observe(ctx, d.ID, obs), false, fmt.Errorf("detach network: %w", err)
		}
		if err := a.dropState(d.ID); err != nil {
			log.Warn("remove local state", "error", err)
		}
		log.Info("instance removed")
		obs.State = nodeproto.ObsAbsent
		return obs, true, nil

	case model.PowerStopped:
		st := a.loadState(d.ID)
		err := a.cfg.Driver.Stop(ctx, d.ID, d.StopGrace)
		if err != nil && !errors.Is(err, compute.ErrNotFound) {
			return a.observe(ctx, d.ID, obs), false, fmt.Errorf("stop VM: %w", err)
		}
		st.AppliedRev = d.Rev
		if err := a.saveState(d.ID, st); err != nil {
			log.Warn("save local state", "error", err)
		}
		obs = a.observe(ctx, d.ID, obs)
		if obs.State == nodeproto.ObsAbsent {
			obs.State = nodeproto.ObsStopped // never created: nothing to stop
		}
		return obs, false, nil

	case model.PowerRunning:
		if d.Move != nil {
			obs, err := a.convergeMove(ctx, d, obs)
			return obs, false, err
		}
		return a.convergeRunning(ctx, d, obs)
	}
	return obs, false, fmt.Errorf("unknown desired power %q", d.Power)
}

func (a *Agent) convergeRunning(ctx context.Context, d nodeproto.DesiredInstance, obs nodeproto.ObservedInstance) (nodeproto.ObservedInstance, bool, error) {
	log := a.log.With("instance", d.ID)
	st := a.loadState(d.ID)
	status, serr := a.cfg.Driver.Status(ctx, d.ID)
	if serr == nil && status.State == compute.StateMigrated {
		// A move was called off after the copy: the destination lost the
		// VM, and this paused copy is the instance.
		if mig, ok := a.cfg.Driver.(compute.Migrator); ok {
			if err := mig.Resume(ctx, d.ID); err != nil {
				return a.observe(ctx, d.ID, obs), false, fmt.Errorf("resume VM: %w", err)
			}
			log.Warn("instance resumed here: its move was called off after the copy")
			status, serr = a.cfg.Driver.Status(ctx, d.ID)
		}
	}
	wasRunning := serr == nil && status.State == compute.StateRunning
	current := d.Rev <= st.AppliedRev && st.BootID == a.bootID
	if wasRunning && (!current || !a.attachedNow(d.ID)) {
		// A running VM whose desired state changed (groups, metadata
		// options), or one this agent process has not attached yet (after
		// a restart the DHCP lease, rules and metadata are rebuilt).
		if err := a.attach(ctx, d); err != nil {
			return a.observe(ctx, d.ID, obs), false, err
		}
	}
	if current {
		// Carried out already: a VM that stopped since did so on its own,
		// and the controller decides what happens next.
		if wasRunning && d.RebootSeq > st.RebootSeq {
			if err := a.cfg.Driver.Reboot(ctx, d.ID); err != nil {
				return a.observe(ctx, d.ID, obs), false, fmt.Errorf("reboot: %w", err)
			}
			log.Info("instance rebooted")
			st.RebootSeq = d.RebootSeq
			if err := a.saveState(d.ID, st); err != nil {
				log.Warn("save local state", "error", err)
			}
		}
		return a.observe(ctx, d.ID, obs), false, nil
	}
	if !wasRunning {
		if err := a.boot(ctx, d); err != nil {
			log.Error("instance failed to start", "error", err)
			obs.State, obs.Reason = nodeproto.ObsFailed, err.Error()
			return obs, false, nil
		}
		log.Info("instance started")
	} else if d.RebootSeq > st.RebootSeq && st.AppliedRev > 0 {
		if err := a.cfg.Driver.Reboot(ctx, d.ID); err != nil {
			return a.observe(ctx, d.ID, obs), false, fmt.Errorf("reboot: %w", err)
		}
		log.Info("instance rebooted")
	}
	st = localState{AppliedRev: d.Rev, RebootSeq: d.RebootSeq, BootID: a.bootID}
	if err := a.saveState(d.ID, st); err != nil {
		log.Warn("save local state", "error", err)
	}
	return a.observe(ctx, d.ID, obs), false, nil
}

// boot prepares the instance's image, network and VM, and starts it.
func (a *Agent) boot(ctx context.Context, d nodeproto.DesiredInstance) error {
	if err := a.create(ctx, d); err != nil {
		return err
	}
	if err := a.cfg.Driver.Start(ctx, d.ID); err != nil {
		return fmt.Errorf("start VM: %w", err)
	}
	return nil
}

// create prepares the instance's image and port and creates its VM (a VM
// that exists with the same spec is kept).
func (a *Agent) create(ctx context.Context, d nodeproto.DesiredInstance) error {
	spec, err := a.spec(ctx, d)
	if err != nil {
		return err
	}
	if err := a.cfg.Driver.Create(ctx, spec); err != nil && !errors.Is(err, compute.ErrExists) {
		return fmt.Errorf("create VM: %w", err)
	}
	return nil
}

// spec fetches the instance's image, attaches its port and returns the VM
// spec.
func (a *Agent) spec(ctx context.Context, d nodeproto.DesiredInstance) (compute.Spec, error) {
	uuid := SMBIOSUUID(d.ID)
	spec := compute.Spec{ID: d.ID, VCPUs: d.VCPUs, MemoryMiB: d.MemoryMiB, Machine: d.Image.Machine,
		SMBIOSUUID: uuid, SMBIOSSerial: uuid}
	for _, f := range []struct {
		ref  model.BlobRef
		dest *string
	}{{d.Image.Kernel, &spec.Kernel}, {d.Image.Initrd, &spec.Initrd}, {d.Image.Disk, &spec.BaseImage}} {
		if f.ref.IsZero() {
			continue
		}
		path, err := a.ensureBlob(ctx, f.ref)
		if err != nil {
			return spec, err
		}
		*f.dest = path
	}
	if spec.BaseImage != "" {
		spec.BaseFormat = d.Image.DiskFormat
		if int64(d.DiskGiB)<<30 > d.Image.DiskSize {
			spec.DiskSizeMiB = d.DiskGiB << 10
		}
	}
	if spec.Kernel != "" {
		spec.Cmdline = d.Image.Cmdline
		if spec.Cmdline == "" {
			spec.Cmdline = defaultCmdline
		}
	}
	if d.Network.MAC != "" {
		port, err := a.cfg.Network.Attach(ctx, d.ID, d.Network)
		if err != nil {
			return spec, fmt.Errorf("network: %w", err)
		}
		a.cfg.Metadata.Set(d.ID, port.Mark, d.Metadata, d.MetadataOptions)
		a.attachedOK(d.ID)
		spec.NICs = []compute.NIC{{MAC: d.Network.MAC, Tap: port.Tap}}
	}
	return spec, nil
}

// SMBIOSUUID is the machine UUID of an instance: it starts with "ec2", and
// the same string is the SMBIOS serial, which is how cloud-init recognises
// an EC2 machine and picks its EC2 datasource (IMDSv2 at 169.254.169.254).
func SMBIOSUUID(instanceID string) string {
	h := sha256.Sum256([]byte("clipper-smbios/" + instanceID))
	x := "ec2" + hex.EncodeToString(h[:])[:29]
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}

// attach (re)applies an instance's port and metadata.
func (a *Agent) attach(ctx context.Context, d nodeproto.DesiredInstance) error {
	if d.Network.MAC == "" {
		return nil
	}
	port, err := a.cfg.Network.Attach(ctx, d.ID, d.Network)
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	a.cfg.Metadata.Set(d.ID, port.Mark, d.Metadata, d.MetadataOptions)
	a.attachedOK(d.ID)
	return nil
}

func (a *Agent) attachedNow(id string) bool {
	_, ok := a.attached.Load(id)
	return ok
}

func (a *Agent) attachedOK(id string) { a.attached.Store(id, true) }

// ensureBlob fetches an image blob, retrying transient failures.
func (a *Agent) ensureBlob(ctx context.Context, ref model.BlobRef) (string, error) {
	var err error
	for attempt := range 3 {
		var path string
		if path, err = a.cache.Ensure(ctx, ref); err == nil {
			return path, nil
		}
		if ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt+1) * time.Second):
		}
	}
	return "", fmt.Errorf("image: %w", err)
}

// observe fills obs from the driver.
func (a *Agent) observe(ctx context.Context, id string, obs nodeproto.ObservedInstance) nodeproto.ObservedInstance {
	st, err := a.cfg.Driver.Status(ctx, id)
	switch {
	case errors.Is(err, compute.ErrNotFound):
		obs.State = nodeproto.ObsAbsent
	case err != nil:
		obs.State, obs.Reason = nodeproto.ObsFailed, err.Error()
	case st.State == compute.StateRunning:
		obs.State, obs.PID, obs.StartedAt, obs.Reason = nodeproto.ObsRunning, st.PID, st.StartedAt, ""
	case st.State == compute.StateIncoming:
		obs.State, obs.PID, obs.Reason = nodeproto.ObsIncoming, st.PID, ""
	case st.State == compute.StateMigrated:
		obs.State, obs.PID, obs.Reason = nodeproto.ObsMigrated, st.PID, ""
	default:
		obs.State, obs.Reason = nodeproto.ObsStopped, st.ExitReason
	}
	return obs
}
