package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

// nodeURL normalizes --controller: the node protocol is HTTPS only.
func nodeURL(s string, log *slog.Logger) string {
	s = strings.TrimRight(s, "/")
	if rest, ok := strings.CutPrefix(s, "http://"); ok {
		log.Warn("the node protocol is HTTPS only; using https://", "controller", s)
		return "https://" + rest
	}
	if !strings.Contains(s, "://") {
		return "https://" + s
	}
	return s
}

// nodeIdentity loads the certificate the node got when it joined
// (DATA-DIR/pki), or joins with the token at first start or once the
// certificate has expired.
func nodeIdentity(ctx context.Context, base, token, name, dir string, log *slog.Logger) (*nodeproto.Identity, error) {
	pkiDir := filepath.Join(dir, "pki")
	id, err := nodeproto.LoadIdentity(pkiDir)
	switch {
	case err == nil:
		if id.Name() != name {
			return nil, fmt.Errorf("this node joined as %q (%s/node.crt), not %q: run it with --name %s, or remove %s and join again",
				id.Name(), pkiDir, name, id.Name(), pkiDir)
		}
		if time.Now().Before(id.Leaf().NotAfter) {
			return id, nil
		}
		if token == "" {
			return nil, fmt.Errorf("the node certificate %s/node.crt expired at %s: join again with --token or --token-file",
				pkiDir, id.Leaf().NotAfter.Format(time.RFC3339))
		}
		log.Warn("the node certificate expired; joining again", "not_after", id.Leaf().NotAfter)
	case errors.Is(err, os.ErrNotExist):
		if token == "" {
			return nil, errors.New("this node has not joined yet: give the join token with --token or --token-file " +
				"(the controller's DATA-DIR/join-token, or one from 'clipper token create')")
		}
	default:
		return nil, fmt.Errorf("node certificate: %w", err)
	}
	id, err = nodeproto.Join(ctx, base, token, name, pkiDir)
	if err != nil {
		return nil, err
	}
	log.Info("joined the controller", "controller", base, "name", name, "not_after", id.Leaf().NotAfter)
	return id, nil
}
