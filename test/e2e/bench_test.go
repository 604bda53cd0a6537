package e2e

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/clipper-cloud/clipper/internal/compute"
	"github.com/clipper-cloud/clipper/internal/compute/qemu"
)

// bootRuns is how many boots each side of BenchmarkBootToReady measures.
const bootRuns = 5

// waitFile polls a file until it contains want and returns when it did.
func waitFile(b testing.TB, path, want string, within time.Duration) time.Time {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if data, err := os.ReadFile(path); err == nil && strings.Contains(string(data), want) {
			return time.Now()
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Fatalf("%q not in %s after %s", want, path, within)
	return time.Time{}
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// BenchmarkBootToReady measures RunInstances -> CLIPPER-GUEST-READY in the
// VM's console (and in GetConsoleOutput) through a whole `clipper up`, next
// to a bare qemu-system-x86_64 started with the very command line the
// driver uses, in the same namespace on the same machine. The ratio is
// Clipper's overhead.
func BenchmarkBootToReady(b *testing.B) {
	requireVMs(b)
	kernel, initrd := guest(b)
	c := StartCloud(b)
	ctx := context.Background()
	ami := c.ImportGuest(b, "bench")
	var vm, api, bare []time.Duration
	for b.Loop() {
		vm, api, bare = nil, nil, nil
		for range bootRuns {
			start := time.Now()
			run, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
			if err != nil {
				b.Fatal(err)
			}
			id := *run.Instances[0].InstanceId
			ready := waitFile(b, filepath.Join(c.Dir, "node", "vms", id, "console.log"), "CLIPPER-GUEST-READY", 2*time.Minute)
			vm = append(vm, ready.Sub(start))
			c.WaitConsole(b, id, "CLIPPER-GUEST-READY", time.Minute)
			api = append(api, time.Since(start))
			if _, err := c.EC2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
				b.Fatal(err)
			}
			waitState(b, c, id, types.InstanceStateNameTerminated, time.Minute)
		}
		for i := range bootRuns {
			bare = append(bare, bareBoot(b, c, kernel, initrd, i))
		}
	}
	b.ReportMetric(median(vm).Seconds(), "clipper-s")
	b.ReportMetric(median(api).Seconds(), "clipper-api-s")
	b.ReportMetric(median(bare).Seconds(), "bare-qemu-s")
	b.ReportMetric(median(vm).Seconds()/median(bare).Seconds(), "overhead-ratio")
	b.ReportMetric(0, "ns/op")
}

// bareBoot boots the guest with plain qemu-system-x86_64, using the argv
// the qemu driver builds for a t3.micro (2 vCPU, 1 GiB) with one tap NIC.
func bareBoot(b testing.TB, c *Cloud, kernel, initrd string, i int) time.Duration {
	dir := b.TempDir()
	tap := "tapbare" + string(rune('0'+i))
	c.NS.IP("tuntap", "add", "dev", tap, "mode", "tap")
	c.NS.IP("link", "set", tap, "up")
	defer c.NS.IP("link", "del", tap)
	d, err := qemu.New(qemu.Config{StateDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	id := "i-0ba5e00000000000" + string(rune('0'+i))
	args := d.Command(compute.Spec{ID: id, VCPUs: 2, MemoryMiB: 1024, Kernel: kernel, Initrd: initrd,
		Cmdline: "console=ttyS0 quiet", NICs: []compute.NIC{{MAC: "02:00:00:00:00:0" + string(rune('1'+i)), Tap: tap}}})
	// Same command line, minus what only a managed VM needs: no
	// daemonizing, no pidfile, no QMP; the console goes to a file as before.
	var plain []string
	for j := 0; j < len(args); j++ {
		switch args[j] {
		case "-daemonize":
			continue
		case "-pidfile", "-qmp":
			j++
			continue
		}
		plain = append(plain, args[j])
	}
	if err := os.MkdirAll(filepath.Join(dir, id), 0o700); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	cmd := exec.Command("ip", append([]string{"netns", "exec", c.NS.Name, "qemu-system-x86_64"}, plain...)...)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	ready := waitFile(b, filepath.Join(dir, id, "console.log"), "CLIPPER-GUEST-READY", 2*time.Minute)
	return ready.Sub(start)
}
