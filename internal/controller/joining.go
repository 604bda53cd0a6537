package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/clipper-cloud/clipper/internal/api"
	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/pki"
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

func (j joining) RemoveNode(ctx context.Context, name string, force bool) (api.RemoveNodeReply, error) {
	rm, err := j.c.svc.RemoveNode(ctx, name, force)
	if err != nil {
		return api.RemoveNodeReply{}, err
	}
	n, err := j.c.ca.RevokeNode(name)
	if err != nil {
		return api.RemoveNodeReply{}, err
	}
	if !rm.Found && n == 0 {
		return api.RemoveNodeReply{}, model.Errorf(model.KindNotFound, model.ResNode, name, "There is no node named %s", name)
	}
	j.c.log.Info("node removed", "name", name, "revoked_certificates", n, "terminated", rm.Terminated, "forwards", rm.Forwards)
	return api.RemoveNodeReply{Name: name, RevokedCertificates: n, TerminatedInstances: nonNil(rm.Terminated),
		DeletedForwards: nonNil(rm.Forwards)}, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (j joining) JoinTokens(context.Context) ([]api.JoinTokenInfo, error) {
	ts := j.c.ca.Tokens()
	out := make([]api.JoinTokenInfo, 0, len(ts))
	for _, t := range ts {
		out = append(out, api.JoinTokenInfo{ID: t.ID, Created: t.Created, Expires: t.Expires, File: t.ID == j.c.fileTokenID()})
	}
	return out, nil
}

// DeleteJoinToken revokes a join token. Revoking the one in
// DATA-DIR/join-token puts a new one there.
func (j joining) DeleteJoinToken(_ context.Context, id string) (api.DeleteTokenReply, error) {
	if err := j.c.ca.DeleteToken(id); err != nil {
		if errors.Is(err, pki.ErrUnknownToken) {
			return api.DeleteTokenReply{}, model.Errorf(model.KindNotFound, model.ResJoinToken, id, "There is no join token %s", id)
		}
		return api.DeleteTokenReply{}, err
	}
	out := api.DeleteTokenReply{ID: id}
	if id == j.c.fileTokenID() {
		t, err := j.c.ca.EnsureTokenFile(filepath.Join(j.c.cfg.DataDir, "join-token"))
		if err != nil {
			return out, fmt.Errorf("a new join token for DATA-DIR/join-token: %w", err)
		}
		j.c.setFileToken(t)
		out.NewFileToken = t.ID
	}
	j.c.log.Info("join token revoked", "token", id, "new_file_token", out.NewFileToken)
	return out, nil
}
