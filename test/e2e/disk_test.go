package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/clipper-cloud/clipper/internal/testutil/need"
)

// TestWholeDiskImageWithCLI drives a firmware-booted whole-disk image with
// nothing but the AWS CLI v2: the disk uploaded with `clipper image import
// --upload-only` and registered with `aws ec2 register-image`, a key pair
// imported, the instance run, waited for, stopped and terminated. Between
// those steps `clipper up` is stopped with Ctrl-C and started again: it
// exits cleanly, the VM keeps running, the credentials stay the same, and
// the new `clipper up` adopts the VM.
func TestWholeDiskImageWithCLI(t *testing.T) {
	requireVMs(t)
	kernel, _ := guest(t)
	disk := filepath.Join(filepath.Dir(kernel), "disk.qcow2")
	if _, err := os.Stat(disk); err != nil {
		need.Missing(t, "no whole-disk test guest (%v): run `make guest-image` (`make test` does)", err)
	}
	c := StartCloud(t)

	loc := c.Run(t, clipperBin, "image", "import", "--upload-only", disk)
	ami := c.AWS(t, "ec2", "register-image", "--name", "disk-guest", "--image-location", loc, "--query", "ImageId", "--output", "text")
	if !strings.HasPrefix(ami, "ami-") {
		t.Fatalf("register-image printed %q", ami)
	}
	if got := c.AWS(t, "ec2", "describe-images", "--image-ids", ami, "--query",
		"Images[0].[RootDeviceType,RootDeviceName,BlockDeviceMappings[0].DeviceName]", "--output", "text"); got != "ebs\t/dev/xvda\t/dev/xvda" {
		t.Fatalf("describe-images: %q", got)
	}

	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pub := writeTemp(t, string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	c.AWS(t, "ec2", "import-key-pair", "--key-name", "imported", "--public-key-material", "fileb://"+pub)
	if got := c.AWS(t, "ec2", "describe-key-pairs", "--key-names", "imported", "--query", "KeyPairs[0].KeyType", "--output", "text"); got != "ed25519" {
		t.Fatalf("imported key type %q", got)
	}

	id := c.AWS(t, "ec2", "run-instances", "--image-id", ami, "--instance-type", "t3.micro", "--key-name", "imported",
		"--query", "Instances[0].InstanceId", "--output", "text")
	c.AWS(t, "ec2", "wait", "instance-running", "--instance-ids", id)
	c.WaitConsole(t, id, "CLIPPER-GUEST-READY", 3*time.Minute)
	pid := qemuPID(t, c, id)
	if pid == 0 {
		t.Fatal("no QEMU process")
	}
	if cmd, _ := os.ReadFile("/proc/" + itoa(pid) + "/cmdline"); strings.Contains(string(cmd), "-kernel") ||
		!strings.Contains(string(cmd), "q35") {
		t.Fatalf("not a firmware boot: %q", strings.ReplaceAll(string(cmd), "\x00", " "))
	}

	// Ctrl-C: `clipper up` stops cleanly and leaves the VM running.
	up := c.Proc("up")
	if err := syscall.Kill(up.PID(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-up.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("clipper up still runs 30 s after SIGINT")
	}
	if err := up.Wait(); err != nil {
		t.Fatalf("clipper up after SIGINT: %v\n%s", err, up.Stderr())
	}
	if got := qemuPID(t, c, id); got != pid {
		t.Fatalf("the VM did not outlive clipper up: %d -> %d", pid, got)
	}
	if _, err := os.Stat(filepath.Join(c.Dir, "aws.env")); err != nil {
		t.Fatalf("aws.env after a clean stop: %v", err)
	}
	key := c.creds["AWS_SECRET_ACCESS_KEY"]
	c.Env = nil
	c.Start(t, "up", "up", "--data-dir", c.Dir, "--listen", "127.0.0.1:8773")
	c.waitEnv(t)
	if c.creds["AWS_SECRET_ACCESS_KEY"] != key {
		t.Fatal("the admin credentials changed across a restart")
	}
	for _, f := range []string{"clipper.db", "aws.env"} {
		if st, err := os.Stat(filepath.Join(c.Dir, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v (%v), want 0600", f, st.Mode().Perm(), err)
		}
	}
	if got := c.AWS(t, "ec2", "describe-instances", "--instance-ids", id, "--query",
		"Reservations[0].Instances[0].State.Name", "--output", "text"); got != "running" {
		t.Fatalf("after the restart: %s", got)
	}
	if got := qemuPID(t, c, id); got != pid {
		t.Fatalf("the restarted cloud did not adopt the VM: %d -> %d", pid, got)
	}

	// A graceful stop: the firmware-booted guest hears the ACPI button.
	c.AWS(t, "ec2", "stop-instances", "--instance-ids", id)
	c.AWS(t, "ec2", "wait", "instance-stopped", "--instance-ids", id)
	if qemuPID(t, c, id) != 0 {
		t.Fatal("stopped, but QEMU still runs")
	}
	if b, err := os.ReadFile(filepath.Join(c.Dir, "node", "vms", id, "exit-reason")); err != nil || string(b) != "guest powered off" {
		t.Fatalf("stop was not graceful: %q %v", b, err)
	}
	c.AWS(t, "ec2", "terminate-instances", "--instance-ids", id)
	c.AWS(t, "ec2", "wait", "instance-terminated", "--instance-ids", id)
	if _, err := os.Stat(filepath.Join(c.Dir, "node", "vms", id)); !os.IsNotExist(err) {
		t.Fatalf("the terminated VM's directory is still there: %v", err)
	}
}
