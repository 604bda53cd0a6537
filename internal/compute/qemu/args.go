package qemu

import (
	"fmt"
	"strings"

	"github.com/clipper-cloud/clipper/internal/compute"
)

// Command returns the QEMU command line (without the binary) the driver
// runs for a spec, so a benchmark can boot the same guest without Clipper.
func (d *Driver) Command(s compute.Spec) []string { return d.args(s) }

// machine picks the machine type: microvm for direct kernel boot unless the
// image asks for q35, and q35 with firmware for whole-disk images.
func machine(s compute.Spec) string {
	if s.Machine != "" {
		return s.Machine
	}
	if s.Kernel != "" {
		return "microvm"
	}
	return "q35"
}

func (d *Driver) args(s compute.Spec) []string {
	m := machine(s)
	dev := func(pci, mmio string) string {
		if m == "microvm" {
			return mmio
		}
		return pci
	}
	a := []string{
		"-name", "guest=" + s.ID,
		"-nodefaults", "-no-user-config", "-display", "none",
		"-daemonize", "-pidfile", d.path(s.ID, pidFile),
		"-accel", d.accel(),
		"-cpu", "max",
		"-smp", fmt.Sprint(s.VCPUs), "-m", fmt.Sprintf("%dM", s.MemoryMiB),
		"-qmp", "unix:" + d.path(s.ID, qmpFile) + ",server=on,wait=off",
		"-chardev", "file,id=console,path=" + d.path(s.ID, consoleFile) + ",append=on",
		"-serial", "chardev:console",
		// A guest that powers off leaves QEMU waiting, so the driver can
		// tell a shutdown from a crash before it ends the process.
		"-no-shutdown",
	}
	if m == "microvm" {
		a = append(a, "-machine", "microvm,acpi=on,rtc=on")
	} else {
		a = append(a, "-machine", "q35")
	}
	if s.Kernel != "" {
		cmdline := s.Cmdline
		if m == "microvm" && !d.kvm && !strings.Contains(cmdline, "tsc_early_khz") {
			// Without KVM, microvm hangs in TSC calibration now and then.
			cmdline = strings.TrimSpace(cmdline + " tsc_early_khz=2000000")
		}
		a = append(a, "-kernel", s.Kernel, "-append", cmdline)
		if s.Initrd != "" {
			a = append(a, "-initrd", s.Initrd)
		}
	}
	if s.BaseImage != "" {
		a = append(a, "-drive", "id=root,if=none,format=qcow2,discard=unmap,file="+d.path(s.ID, overlayFile),
			"-device", dev("virtio-blk-pci", "virtio-blk-device")+",drive=root,bootindex=1")
	}
	if s.SeedImage != "" {
		a = append(a, "-drive", "id=seed,if=none,format=raw,readonly=on,file="+s.SeedImage,
			"-device", dev("virtio-blk-pci", "virtio-blk-device")+",drive=seed")
	}
	for i, n := range s.NICs {
		id := fmt.Sprintf("net%d", i)
		a = append(a, "-netdev", "tap,id="+id+",ifname="+n.Tap+",script=no,downscript=no",
			"-device", dev("virtio-net-pci", "virtio-net-device")+",netdev="+id+",mac="+n.MAC)
	}
	if s.SMBIOSUUID != "" {
		a = append(a, "-uuid", s.SMBIOSUUID)
	}
	if s.SMBIOSSerial != "" && m != "microvm" {
		a = append(a, "-smbios", "type=1,serial="+strings.ReplaceAll(s.SMBIOSSerial, ",", ",,"))
	}
	return a
}

func (d *Driver) accel() string {
	if d.kvm {
		return "kvm"
	}
	return "tcg"
}
