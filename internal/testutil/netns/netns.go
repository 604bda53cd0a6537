// Package netns builds throw-away network topologies for tests: network
// namespaces joined by veth pairs, commands and background processes run
// inside them. Everything a helper creates is removed by t.Cleanup, also when
// the test fails: processes are killed by PID, then the namespace is deleted,
// which takes its devices, routes and nftables tables with it. Nothing is
// created in the namespace the test runs in.
package netns

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/testutil/need"
)

// cmdTimeout bounds every command a helper runs.
const cmdTimeout = 30 * time.Second

// Require skips the test unless it may build namespaces: not with -short,
// only as root and only where the ip tool exists.
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: skipping a test that creates network namespaces")
	}
	if os.Geteuid() != 0 {
		need.Missing(t, "needs root to create network namespaces: run as root (sudo make test)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		need.Missing(t, "needs the ip tool to create network namespaces: apt-get install iproute2 (make test does)")
	}
}

// NS is one network namespace that lives as long as the test that made it.
type NS struct {
	// Name is the namespace's name under /run/netns, unique on the machine.
	Name string
	t    testing.TB
}

// New creates a namespace whose name starts with prefix, brings its loopback
// up and deletes it when the test ends.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("netns: random name: %v", err)
	}
	name := fmt.Sprintf("clt-%s-%s", prefix, hex.EncodeToString(b[:]))
	if out, err := run(context.Background(), "ip", "netns", "add", name); err != nil {
		t.Fatalf("netns: add %s: %v: %s", name, err, out)
	}
	n := &NS{Name: name, t: t}
	t.Cleanup(func() {
		if out, err := run(context.Background(), "ip", "netns", "del", name); err != nil {
			t.Errorf("netns: delete %s: %v: %s", name, err, out)
		}
	})
	n.IP("link", "set", "lo", "up")
	// Devices made later skip duplicate address detection, also for their
	// link-local addresses: IPv6 works as soon as a link is up.
	n.Sysctl("net.ipv6.conf.default.accept_dad", "0")
	n.Sysctl("net.ipv6.conf.all.accept_dad", "0")
	return n
}

func run(ctx context.Context, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}

// Output runs argv inside the namespace and returns its combined output; a
// non-zero exit is an *exec.ExitError.
func (n *NS) Output(argv ...string) (string, error) {
	return run(context.Background(), append([]string{"ip", "netns", "exec", n.Name}, argv...)...)
}

// Command returns a command that runs argv inside the namespace, for
// callers that need their own timeout or I/O.
func (n *NS) Command(ctx context.Context, argv ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name}, argv...)...)
}

// Run runs argv inside the namespace and fails the test if it fails.
func (n *NS) Run(argv ...string) string {
	n.t.Helper()
	out, err := n.Output(argv...)
	if err != nil {
		n.t.Fatalf("netns %s: %s: %v: %s", n.Name, strings.Join(argv, " "), err, out)
	}
	return out
}

// IP runs `ip -n NAME args...` and fails the test if it fails.
func (n *NS) IP(args ...string) {
	n.t.Helper()
	argv := append([]string{"ip", "-n", n.Name}, args...)
	if out, err := run(context.Background(), argv...); err != nil {
		n.t.Fatalf("netns: %s: %v: %s", strings.Join(argv, " "), err, out)
	}
}

// Addr assigns an address in CIDR form to a device. IPv6 addresses skip
// duplicate address detection so they are usable at once.
func (n *NS) Addr(dev, cidr string) {
	n.t.Helper()
	args := []string{"addr", "add", cidr, "dev", dev}
	if strings.Contains(cidr, ":") {
		args = append(args, "nodad")
	}
	n.IP(args...)
}

// Sysctl sets a sysctl inside the namespace, key in dotted form.
func (n *NS) Sysctl(key, value string) {
	n.t.Helper()
	n.Run("sysctl", "-qw", key+"="+value)
}

// Forward turns the namespace into a router for IPv4 and IPv6.
func (n *NS) Forward() {
	n.t.Helper()
	n.Sysctl("net.ipv4.ip_forward", "1")
	n.Sysctl("net.ipv6.conf.all.forwarding", "1")
}

// Nft loads an nftables rule set (nft -f syntax) into the namespace.
func (n *NS) Nft(ruleset string) {
	n.t.Helper()
	f, err := os.CreateTemp(n.t.TempDir(), "ruleset-*.nft")
	if err != nil {
		n.t.Fatalf("netns: %v", err)
	}
	if _, err := f.WriteString(ruleset); err != nil {
		n.t.Fatalf("netns: %v", err)
	}
	f.Close()
	n.Run("nft", "-f", f.Name())
}

// Link joins device aDev in a to device bDev in b with a veth pair and brings
// both ends up. The pair is created inside a, never in the caller's namespace.
func Link(t testing.TB, a *NS, aDev string, b *NS, bDev string) {
	t.Helper()
	a.IP("link", "add", aDev, "type", "veth", "peer", "name", bDev, "netns", b.Name)
	a.IP("link", "set", aDev, "up")
	b.IP("link", "set", bDev, "up")
}

// Proc is a background process inside a namespace, killed when the test ends.
type Proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	line chan string
	done chan struct{}

	waitOnce sync.Once
	waitErr  error
}

// Start runs argv inside the namespace in the background. Its standard
// output is read line by line (see WaitFor); standard error goes to the
// test log when the test fails. The process is killed by PID on cleanup.
func (n *NS) Start(argv ...string) *Proc {
	n.t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name}, argv...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		n.t.Fatalf("netns: %v", err)
	}
	p := &Proc{cmd: cmd, line: make(chan string, 64), done: make(chan struct{})}
	cmd.Stderr = writerFunc(func(b []byte) (int, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.out.Write(b)
	})
	if err := cmd.Start(); err != nil {
		n.t.Fatalf("netns %s: start %s: %v", n.Name, strings.Join(argv, " "), err)
	}
	go p.read(stdout)
	t := n.t
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		_ = p.Wait()
		if t.Failed() {
			t.Logf("netns %s: %s: stderr:\n%s", n.Name, strings.Join(argv, " "), p.Stderr())
		}
	})
	return p
}

func (p *Proc) read(r io.Reader) {
	defer close(p.done)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		select {
		case p.line <- sc.Text():
		default: // nobody waits for lines: drop them
		}
	}
}

// WaitFor waits until the process prints a line containing s.
func (p *Proc) WaitFor(ctx context.Context, s string) error {
	for {
		select {
		case l := <-p.line:
			if strings.Contains(l, s) {
				return nil
			}
		case <-p.done:
			return fmt.Errorf("netns: process exited before printing %q: %s", s, p.Stderr())
		case <-ctx.Done():
			return fmt.Errorf("netns: waiting for %q: %w", s, ctx.Err())
		}
	}
}

// Wait waits for the process to exit and returns what exec.Cmd.Wait says
// (an *exec.ExitError for a non-zero status); it may be called again.
func (p *Proc) Wait() error {
	p.waitOnce.Do(func() {
		<-p.done
		p.waitErr = p.cmd.Wait()
	})
	return p.waitErr
}

// Done is closed when the process has exited (its output is closed).
func (p *Proc) Done() <-chan struct{} { return p.done }

// PID is the process ID of the background process.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Stderr returns what the process wrote to standard error so far.
func (p *Proc) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
