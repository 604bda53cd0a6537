package qemu

import (
	"bytes"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tlsDriver is a driver with the given credentials that starts no VM.
func tlsDriver(t *testing.T, creds func() (MigrationTLS, error)) (*Driver, *moveTLS) {
	t.Helper()
	d := &Driver{cfg: Config{MigrationTLS: creds}, log: slog.New(slog.NewTextHandler(io.Discard, nil)), tunnels: map[string][]*tunnel{}}
	m, err := d.migrationTLS()
	if err != nil {
		t.Fatal(err)
	}
	return d, m
}

func TestVerifyNode(t *testing.T) {
	ca, other := openTestCA(t), openTestCA(t)
	_, b := tlsDriver(t, nodeCreds(t, ca, "node-b"))
	_, a := tlsDriver(t, nodeCreds(t, ca, "node-a"))
	_, stranger := tlsDriver(t, nodeCreds(t, other, "node-b"))
	ctl, err := ca.ServerCert([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyNode(b.cert.Certificate, a.roots, "node-b"); err != nil {
		t.Fatalf("node-b: %v", err)
	}
	for what, err := range map[string]error{
		"under another name": verifyNode(b.cert.Certificate, a.roots, "node-c"),
		"of another cluster": verifyNode(stranger.cert.Certificate, a.roots, "node-b"),
		"the controller's":   verifyNode(ctl.Certificate, a.roots, "clipper-controller"),
		"no certificate":     verifyNode(nil, a.roots, "node-b"),
		"not a certificate":  verifyNode([][]byte{[]byte("junk")}, a.roots, "node-b"),
	} {
		if err == nil {
			t.Errorf("a certificate %s passed", what)
		}
	}
}

// TestTunnel carries a stream both ways through a pair of tunnels (unix
// socket, TLS between "nodes", unix socket), with half-closes reaching
// each end, and checks Close ends a live connection.
func TestTunnel(t *testing.T) {
	ca := openTestCA(t)
	src, ms := tlsDriver(t, nodeCreds(t, ca, "node-a"))
	dst, md := tlsDriver(t, nodeCreds(t, ca, "node-b"))
	dir := t.TempDir()
	// The "QEMU" at the destination echoes what it reads.
	echoSock := filepath.Join(dir, "echo.sock")
	echo, err := net.Listen("unix", echoSock)
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(c, c)
				c.(*net.UnixConn).CloseWrite()
				c.Close()
			}()
		}
	}()
	in, port, err := dst.tunnelIn("127.0.0.1", echoSock, "node-a", md)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	outSock := filepath.Join(dir, "out.sock")
	out, err := src.tunnelOut(outSock, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), "node-b", ms)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()

	data := make([]byte, 4<<20)
	rand.Read(data)
	c, err := net.Dial("unix", outSock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		c.Write(data)
		c.(*net.UnixConn).CloseWrite()
	}()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("echoed %d of %d bytes, equal %v: %v", len(got), len(data), bytes.Equal(got, data), err)
	}

	// A connection still open ends when its tunnel closes.
	c2, err := net.Dial("unix", outSock)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := c2.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	c2.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c2, buf); err != nil || buf[0] != 'x' {
		t.Fatalf("echo through the tunnels: %q %v", buf, err)
	}
	done := make(chan struct{})
	go func() { out.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("closing a tunnel with a live connection hangs")
	}
	if _, err := c2.Read(buf); err == nil {
		t.Fatal("a connection outlived its tunnel")
	}
	if err := out.lastError(); err != nil {
		t.Fatalf("tunnel error: %v", err)
	}
	// sendAs sends a byte to the destination through a tunnel with creds
	// and returns that tunnel and what came back (nothing, if refused).
	sendAs := func(sock string, creds *moveTLS) (*tunnel, []byte) {
		t.Helper()
		tn, err := src.tunnelOut(filepath.Join(dir, sock), net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), "node-b", creds)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(tn.Close)
		c, err := net.Dial("unix", filepath.Join(dir, sock))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("x"))
		c.SetDeadline(time.Now().Add(10 * time.Second))
		got, _ := io.ReadAll(c)
		return tn, got
	}
	// A connection to a node of another cluster is refused, and says why.
	_, stranger := tlsDriver(t, nodeCreds(t, openTestCA(t), "node-a"))
	bad, got := sendAs("bad.sock", stranger)
	if len(got) != 0 {
		t.Fatalf("a stranger's stream reached the destination: %q", got)
	}
	if err := bad.lastError(); err == nil || !strings.Contains(err.Error(), "not a node certificate of this cluster") {
		t.Fatalf("refused tunnel says %v", err)
	}
	// Another node of the cluster is refused by the destination: the
	// instance does not move from it.
	_, nodeC := tlsDriver(t, nodeCreds(t, ca, "node-c"))
	if _, got := sendAs("c.sock", nodeC); len(got) != 0 {
		t.Fatalf("node-c's stream reached the destination: %q", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for in.lastError() == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := in.lastError(); err == nil || !strings.Contains(err.Error(), `node "node-c" is not the node the instance moves from ("node-a")`) {
		t.Fatalf("destination tunnel says %v", err)
	}
}
