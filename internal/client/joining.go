package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/clipper-cloud/clipper/internal/api"
)

var emptyHash = func() string { h := sha256.Sum256(nil); return hex.EncodeToString(h[:]) }()

// CreateJoinToken asks for a join token valid for ttl (0: no expiry).
func (c *Client) CreateJoinToken(ctx context.Context, ttl time.Duration) (api.JoinTokenReply, error) {
	var out api.JoinTokenReply
	q := url.Values{"ttl": {ttl.String()}}
	err := c.Do(ctx, http.MethodPost, api.Prefix+"tokens?"+q.Encode(), nil, 0, emptyHash, &out)
	return out, err
}

// RemoveNode marks a node down and revokes its certificates.
func (c *Client) RemoveNode(ctx context.Context, name string, force bool) (api.RemoveNodeReply, error) {
	var out api.RemoveNodeReply
	q := url.Values{"force": {strconv.FormatBool(force)}}
	err := c.Do(ctx, http.MethodDelete, api.Prefix+"nodes/"+url.PathEscape(name)+"?"+q.Encode(), nil, 0, emptyHash, &out)
	return out, err
}
