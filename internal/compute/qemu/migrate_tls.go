package qemu

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// MigrationTLS is what a node proves itself with to another node when an
// instance moves between them: its node certificate and key and the
// cluster's CA, in PEM, and its name (the certificate's common name). A
// destination gives its name with its address; the source checks that the
// destination's certificate is that node's, and the destination accepts
// only a source with a node certificate of the same CA.
//
// The streams are encrypted by the driver, not by QEMU: QEMU 7.2's own
// TLS migration leaves a microvm guest unable to boot after a reset (its
// main loop spins), so QEMU speaks plain on unix sockets in the VM's
// directory and the driver's tunnels (tunnel.go) speak TLS 1.3 between
// the nodes.
type MigrationTLS struct {
	Name                   string
	CertPEM, KeyPEM, CAPEM []byte
}

// moveTLS is a node's TLS configuration for moves.
type moveTLS struct {
	name   string
	cert   tls.Certificate
	roots  *x509.CertPool
	server *tls.Config
}

// Unix sockets of a move in the VM's directory: where the destination's
// QEMU listens, and where the source's QEMU sends.
const (
	sockIn     = "move-in.sock"
	sockInNBD  = "move-in-nbd.sock"
	sockOut    = "move-out.sock"
	sockOutNBD = "move-out-nbd.sock"
)

// migrationTLS returns the node's TLS configuration for moves, or nil
// when moves go over plain TCP.
func (d *Driver) migrationTLS() (*moveTLS, error) {
	if d.cfg.MigrationTLS == nil {
		return nil, nil
	}
	creds, err := d.cfg.MigrationTLS()
	if err != nil {
		return nil, fmt.Errorf("qemu: the node's credentials for a move: %w", err)
	}
	if creds.Name == "" {
		return nil, errors.New("qemu: the node's credentials for a move name no node")
	}
	cert, err := tls.X509KeyPair(creds.CertPEM, creds.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("qemu: the node's credentials for a move: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(creds.CAPEM) {
		return nil, errors.New("qemu: the node's credentials for a move hold no CA certificate")
	}
	return &moveTLS{name: creds.Name, cert: cert, roots: roots, server: &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    roots,
	}}, nil
}

// client is the configuration for sending to the node named name.
func (m *moveTLS) client(name string) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{m.cert},
		// Verified below: a node certificate is a client certificate,
		// so the standard server check would refuse it.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return verifyNode(raw, m.roots, name)
		}}
}

// verifyNode checks that a peer's chain is the certificate of node name,
// issued by the cluster's CA (roots) for a node: client auth, the name as
// its common name. The controller's certificate (server auth) is not a
// node's.
func verifyNode(raw [][]byte, roots *x509.CertPool, name string) error {
	if len(raw) == 0 {
		return errors.New("the destination sent no certificate")
	}
	leaf, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return err
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("the destination's certificate is not a node certificate of this cluster: %w", err)
	}
	if leaf.Subject.CommonName != name {
		return fmt.Errorf("the destination's certificate is for node %q, not %q", leaf.Subject.CommonName, name)
	}
	return nil
}

// sock is the absolute path of a socket in the VM's directory (QEMU
// daemonizes into /, so a relative path would not be found).
func (d *Driver) sock(id, name string) (string, error) {
	return filepath.Abs(d.path(id, name))
}

// tunnelIn listens with TLS on host (a free port) and carries each
// connection from node from (any node of the cluster if "") to the unix
// socket sock. It returns the port.
func (d *Driver) tunnelIn(host, sock, from string, m *moveTLS) (*tunnel, int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, 0, fmt.Errorf("qemu: no port for a migration on %s: %w", host, err)
	}
	admit := func(c net.Conn) error {
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			return err
		}
		// The handshake verified the chain; the name is the node's.
		if name := tc.ConnectionState().PeerCertificates[0].Subject.CommonName; from != "" && name != from {
			return fmt.Errorf("node %q is not the node the instance moves from (%q)", name, from)
		}
		return nil
	}
	var dialer net.Dialer
	dial := func(ctx context.Context) (net.Conn, error) { return dialer.DialContext(ctx, "unix", sock) }
	t := startTunnel(tls.NewListener(ln, m.server), admit, dial, d.log)
	return t, ln.Addr().(*net.TCPAddr).Port, nil
}

// tunnelOut listens on the unix socket sock and carries each connection
// over TLS to the node name at addr (host:port).
func (d *Driver) tunnelOut(sock, addr, name string, m *moveTLS) (*tunnel, error) {
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, err
	}
	dialer := tls.Dialer{Config: m.client(name)}
	dial := func(ctx context.Context) (net.Conn, error) { return dialer.DialContext(ctx, "tcp", addr) }
	return startTunnel(ln, nil, dial, d.log), nil
}

// setTunnels records the tunnels that serve a VM's move, closing those of
// an earlier attempt.
func (d *Driver) setTunnels(id string, ts []*tunnel) {
	d.mu.Lock()
	old := d.tunnels[id]
	d.tunnels[id] = ts
	d.mu.Unlock()
	for _, t := range old {
		t.Close()
	}
}

// hasTunnels reports whether a VM's move is served by tunnels of this
// driver (not by a driver that ran before a restart).
func (d *Driver) hasTunnels(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.tunnels[id]) > 0
}

// closeTunnels ends a VM's move tunnels.
func (d *Driver) closeTunnels(id string) {
	d.mu.Lock()
	ts := d.tunnels[id]
	delete(d.tunnels, id)
	d.mu.Unlock()
	for _, t := range ts {
		t.Close()
	}
}
