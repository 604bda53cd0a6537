package controller

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

// setupNodeTLS issues the node listener's certificate (at every start, for
// the current addresses) and asks clients for certificates, which the node
// server checks per request so that refusals are readable.
func (c *Controller) setupNodeTLS() error {
	host, _, _ := net.SplitHostPort(c.nodeLn.Addr().String())
	hosts := append([]string{host}, c.cfg.NodeSANs...)
	if name, err := os.Hostname(); err == nil {
		hosts = append(hosts, name)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok {
					hosts = append(hosts, n.IP.String())
				}
			}
		}
	}
	cert, err := c.ca.ServerCert(hosts)
	if err != nil {
		return fmt.Errorf("node listener certificate: %w", err)
	}
	c.nodeTLS = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequestClientCert,
	}
	return nil
}

// LocalNodeClient is a node protocol client for a node in this process
// (clipper up): its certificate comes straight from the CA, and it talks
// mTLS to the node listener like a remote node.
func (c *Controller) LocalNodeClient(name string) (*nodeproto.Client, error) {
	cert, err := c.ca.IssueNode(name, c.cfg.NodeCertTTL)
	if err != nil {
		return nil, err
	}
	return nodeproto.NewClient(c.NodeURL(), nodeproto.NewIdentity(cert, c.ca.Cert())), nil
}

// joining serves the native API's token and node removal calls.
type joining struct{ c *Controller }

func (j joining) CreateJoinToken(_ context.Context, ttl time.Duration) (string, time.Time, error) {
	t, exp, err := j.c.ca.CreateToken(ttl)
	if err != nil {
		return "", time.Time{}, err
	}
	j.c.log.Info("join token created", "token", t.ID, "expires", exp)
	return t.String(), exp, nil
}

func (j joining) RemoveNode(ctx context.Context, name string, force bool) (int, error) {
	found, err := j.c.svc.RemoveNode(ctx, name, force)
	if err != nil {
		return 0, err
	}
	n, err := j.c.ca.RevokeNode(name)
	if err != nil {
		return 0, err
	}
	if !found && n == 0 {
		return 0, model.Errorf(model.KindNotFound, model.ResNode, name, "There is no node named %s", name)
	}
	j.c.log.Info("node removed", "name", name, "revoked_certificates", n)
	return n, nil
}
