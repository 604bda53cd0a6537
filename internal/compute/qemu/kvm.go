package qemu

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"
)

// probeKVM reports whether QEMU can create a vCPU under KVM here. A
// /dev/kvm that opens is not enough: under some nested hypervisors vCPU
// setup fails ("failed to set MSR"), after the point where QEMU's own
// "-accel kvm -accel tcg" fallback applies, so the VM would never start.
func probeKVM(qemuPath string, log *slog.Logger) bool {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		log.Info("KVM not available; VMs run under TCG (software emulation)", "reason", err)
		return false
	}
	f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemuPath, "-accel", "kvm", "-cpu", "max", "-machine", "microvm",
		"-nodefaults", "-no-user-config", "-display", "none", "-S", "-qmp", "stdio")
	cmd.Stdin = strings.NewReader(`{"execute":"qmp_capabilities"}` + "\n" + `{"execute":"quit"}` + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if i := strings.LastIndex(msg, "qemu-system"); i >= 0 {
			msg = msg[i:]
		}
		log.Warn("KVM is present but QEMU cannot use it; VMs run under TCG", "error", err, "qemu", msg)
		return false
	}
	log.Info("KVM available")
	return true
}
