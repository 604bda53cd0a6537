package qemu

import (
	"slices"
	"strings"
	"testing"

	"github.com/clipper-cloud/clipper/internal/agent"
	"github.com/clipper-cloud/clipper/internal/compute"
)

// TestSMBIOSIdentity: a firmware-booted (q35) instance gets the SMBIOS
// system UUID and serial that cloud-init's ds-identify reads to take the
// machine for EC2 (both starting "ec2" and equal); a microvm, which has no
// SMBIOS tables, gets the UUID only.
func TestSMBIOSIdentity(t *testing.T) {
	d := &Driver{cfg: Config{StateDir: t.TempDir()}}
	id := "i-0123456789abcdef0"
	uuid := agent.SMBIOSUUID(id)
	if !strings.HasPrefix(uuid, "ec2") || len(uuid) != 36 || strings.Count(uuid, "-") != 4 {
		t.Fatalf("SMBIOS UUID %q: want a UUID starting with ec2", uuid)
	}
	if agent.SMBIOSUUID(id) != uuid || agent.SMBIOSUUID("i-0123456789abcdef1") == uuid {
		t.Fatal("the UUID is not a stable function of the instance ID")
	}
	q35 := d.args(compute.Spec{ID: id, VCPUs: 1, MemoryMiB: 256, BaseImage: "/x.qcow2", BaseFormat: "qcow2",
		SMBIOSUUID: uuid, SMBIOSSerial: uuid})
	if !hasPair(q35, "-uuid", uuid) || !hasPair(q35, "-smbios", "type=1,serial="+uuid) {
		t.Fatalf("q35 arguments lack the SMBIOS identity: %v", q35)
	}
	micro := d.args(compute.Spec{ID: id, VCPUs: 1, MemoryMiB: 256, Kernel: "/vmlinux", SMBIOSUUID: uuid, SMBIOSSerial: uuid})
	if !hasPair(micro, "-uuid", uuid) || slices.Contains(micro, "-smbios") {
		t.Fatalf("microvm arguments: %v", micro)
	}
}

func hasPair(args []string, flag, value string) bool {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag && args[i+1] == value {
			return true
		}
	}
	return false
}
