package netns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"

	"github.com/clipper-cloud/clipper/internal/testutil/need"
)

// envInside is set in the environment of a test binary that RunInside
// started inside a namespace; its value is the namespace's name.
const envInside = "CLIPPER_TEST_NETNS"

// RunInside runs a package's tests inside a network namespace of their own,
// for packages whose code under test changes the network of the namespace
// it runs in (bridges, nftables, sysctls, sockets on fixed addresses).
// Call it from TestMain: os.Exit(netns.RunInside(m, "pkg")).
//
// As root and without -short it creates a namespace, re-executes the test
// binary in it with the same arguments, deletes the namespace when the
// binary exits and returns its exit code. Otherwise (or in the re-executed
// binary) it just runs the tests; tests that need the namespace call
// RequireInside and skip.
func RunInside(m *testing.M, prefix string) int {
	if os.Getenv(envInside) != "" {
		return m.Run()
	}
	flag.Parse()
	if testing.Short() || os.Geteuid() != 0 {
		return m.Run()
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return m.Run()
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		fmt.Fprintln(os.Stderr, "netns: random name:", err)
		return 1
	}
	name := fmt.Sprintf("clt-%s-%s", prefix, hex.EncodeToString(b[:]))
	if out, err := run(context.Background(), "ip", "netns", "add", name); err != nil {
		fmt.Fprintf(os.Stderr, "netns: add %s: %v: %s\n", name, err, out)
		return 1
	}
	defer func() {
		if out, err := run(context.Background(), "ip", "netns", "del", name); err != nil {
			fmt.Fprintf(os.Stderr, "netns: delete %s: %v: %s\n", name, err, out)
		}
	}()
	if out, err := run(context.Background(), "ip", "-n", name, "link", "set", "lo", "up"); err != nil {
		fmt.Fprintf(os.Stderr, "netns: %s: lo up: %v: %s\n", name, err, out)
		return 1
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "netns:", err)
		return 1
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", name, exe}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), envInside+"="+name)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "netns: start tests:", err)
		return 1
	}
	// Pass an interrupt on to the tests so they clean up, then delete
	// the namespace after they exit.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case s := <-sig:
			_ = cmd.Process.Signal(s)
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return ee.ExitCode()
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "netns: tests:", err)
				return 1
			}
			return 0
		}
	}
}

// Inside returns the name of the namespace RunInside moved the tests into,
// or "" when the tests run where they were started.
func Inside() string { return os.Getenv(envInside) }

// RequireInside skips the test unless Require passes and RunInside moved
// the test binary into a namespace of its own.
func RequireInside(t testing.TB) {
	t.Helper()
	Require(t)
	if Inside() == "" {
		need.Missing(t, "needs a namespace of its own: the package's TestMain must call netns.RunInside")
	}
}

// Current returns the namespace the test runs in (the one RunInside made)
// as an NS, for helpers such as Link. It is not deleted by the test: it
// lives as long as the test binary.
func Current(t testing.TB) *NS {
	t.Helper()
	name := Inside()
	if name == "" {
		t.Fatal("netns: Current outside a namespace made by RunInside")
	}
	return &NS{Name: name, t: t}
}
