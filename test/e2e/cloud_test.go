// Package e2e runs the real clipper binary with real QEMU VMs (TCG here,
// KVM where it works), real bridges, taps and nftables inside network
// namespaces the tests create, and real clients: aws-sdk-go-v2 and the AWS
// CLI v2 from Debian's awscli package.
package e2e

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"

	"github.com/clipper-cloud/clipper/internal/testutil/cloud"
	"github.com/clipper-cloud/clipper/internal/testutil/need"
	"github.com/clipper-cloud/clipper/internal/testutil/netns"
)

// awsCLI is Debian's AWS CLI v2 (the image's python carries a v1 first on PATH).
const awsCLI = "/usr/bin/aws"

var clipperBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	clipperBin = os.Getenv("CLIPPER_BIN")
	if clipperBin == "" && !testing.Short() {
		dir, err := os.MkdirTemp("", "clipper-e2e-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		clipperBin = filepath.Join(dir, "clipper")
		cmd := exec.Command("go", "build", "-o", clipperBin, "../../cmd/clipper")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build clipper: %v\n%s", err, out)
			return 1
		}
	}
	return m.Run()
}

// guest returns the test guest's kernel and initrd (built by make guest-image).
func guest(t testing.TB) (kernel, initrd string) {
	t.Helper()
	dir := os.Getenv("CLIPPER_GUEST")
	if dir == "" {
		dir = filepath.Join("..", "..", "build", "guest")
	}
	dir, _ = filepath.Abs(dir)
	kernel, initrd = filepath.Join(dir, "vmlinux"), filepath.Join(dir, "initrd.img")
	for _, f := range []string{kernel, initrd} {
		if _, err := os.Stat(f); err != nil {
			need.Missing(t, "no test guest (%v): run `make guest-image` (`make test` does)", err)
		}
	}
	return kernel, initrd
}

func requireVMs(t testing.TB) {
	t.Helper()
	netns.Require(t)
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		need.Missing(t, "qemu-system-x86_64 is not installed (`make test` installs it)")
	}
}

// Cloud is a clipper deployment inside a namespace.
type Cloud struct {
	NS    *netns.NS
	Dir   string
	Env   []string // the aws.env exports, as KEY=VALUE
	EC2   *ec2.Client
	http  *http.Client
	procs map[string]*netns.Proc
	creds map[string]string
}

// StartCloud runs `clipper up` in a fresh namespace and waits for aws.env.
func StartCloud(t testing.TB, extra ...string) *Cloud {
	t.Helper()
	c := &Cloud{NS: netns.New(t, "e2e"), Dir: t.TempDir(), procs: map[string]*netns.Proc{}}
	c.Start(t, "up", append([]string{"up", "--data-dir", c.Dir, "--listen", "127.0.0.1:8773"}, extra...)...)
	c.waitEnv(t)
	return c
}

// Start runs a clipper command in the background under a name.
func (c *Cloud) Start(t testing.TB, name string, args ...string) *netns.Proc {
	t.Helper()
	p := c.NS.Start(append([]string{clipperBin}, args...)...)
	c.procs[name] = p
	t.Cleanup(func() { c.killVMs(t) })
	return p
}

// Proc returns a background process by name.
func (c *Cloud) Proc(name string) *netns.Proc { return c.procs[name] }

// killVMs ends every QEMU this cloud started, whatever the test did.
func (c *Cloud) killVMs(t testing.TB) {
	matches, _ := filepath.Glob(filepath.Join(c.Dir, "*", "vms", "*", "qemu.pid"))
	more, _ := filepath.Glob(filepath.Join(c.Dir, "vms", "*", "qemu.pid"))
	for _, pidfile := range append(matches, more...) {
		b, err := os.ReadFile(pidfile)
		if err != nil {
			continue
		}
		var pid int
		fmt.Sscan(string(b), &pid)
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if pid > 0 && strings.Contains(string(cmdline), "guest=i-") {
			if p, err := os.FindProcess(pid); err == nil {
				p.Kill()
			}
		}
	}
}

func (c *Cloud) waitEnv(t testing.TB) {
	t.Helper()
	path := filepath.Join(c.Dir, "aws.env")
	deadline := time.Now().Add(30 * time.Second)
	for {
		f, err := os.Open(path)
		if err == nil {
			c.creds = map[string]string{}
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if kv, ok := strings.CutPrefix(sc.Text(), "export "); ok {
					k, v, _ := strings.Cut(kv, "=")
					c.creds[k] = v
					c.Env = append(c.Env, kv)
				}
			}
			f.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 30 s", path)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("aws.env mode: %v %v", st.Mode(), err)
	}
	c.http = &http.Client{Transport: &http.Transport{DialContext: c.NS.DialContext}}
	c.EC2 = c.client(c.creds["AWS_ACCESS_KEY_ID"], c.creds["AWS_SECRET_ACCESS_KEY"])
}

func (c *Cloud) client(key, secret string) *ec2.Client {
	return ec2.New(ec2.Options{
		Region:       c.creds["AWS_DEFAULT_REGION"],
		BaseEndpoint: aws.String(c.creds["AWS_ENDPOINT_URL"]),
		Credentials:  credentials.NewStaticCredentialsProvider(key, secret, ""),
		HTTPClient:   c.http,
		Retryer:      cloud.RetryClosed(),
	})
}

// Output runs a command in the namespace with the cloud's AWS environment.
func (c *Cloud) Output(t testing.TB, argv ...string) (string, error) {
	t.Helper()
	env := append([]string{"env", "PATH=/usr/bin:/usr/sbin:/bin:/sbin", "AWS_PAGER=", "HOME=" + c.Dir}, c.Env...)
	return c.NS.Output(append(env, argv...)...)
}

// Run is Output that fails the test on error.
func (c *Cloud) Run(t testing.TB, argv ...string) string {
	t.Helper()
	out, err := c.Output(t, argv...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return strings.TrimSpace(out)
}

// AWS runs the AWS CLI v2 against the cloud.
func (c *Cloud) AWS(t testing.TB, args ...string) string {
	t.Helper()
	return c.Run(t, append([]string{awsCLI, "--endpoint-url", c.creds["AWS_ENDPOINT_URL"]}, args...)...)
}

// ImportGuest imports the test guest with clipper image import.
func (c *Cloud) ImportGuest(t testing.TB, name string) string {
	t.Helper()
	kernel, initrd := guest(t)
	ami := c.Run(t, clipperBin, "image", "import", "--name", name, "--kernel", kernel, "--initrd", initrd)
	if !strings.HasPrefix(ami, "ami-") {
		t.Fatalf("image import printed %q", ami)
	}
	return ami
}

// WaitConsole waits until an instance's console (GetConsoleOutput through
// the SDK) contains want.
func (c *Cloud) WaitConsole(t testing.TB, id, want string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		out, err := c.EC2.GetConsoleOutput(context.Background(), &ec2.GetConsoleOutputInput{InstanceId: aws.String(id)})
		if err == nil {
			last = decode64(aws.ToString(out.Output))
			if strings.Contains(last, want) {
				return last
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("%s: %q not on the console after %s; console:\n%s", id, want, within, last)
	return ""
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}
