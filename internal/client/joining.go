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

// RemoveNode forgets a node and revokes its certificates; with force its
// live instances are terminated.
func (c *Client) RemoveNode(ctx context.Context, name string, force bool) (api.RemoveNodeReply, error) {
	var out api.RemoveNodeReply
	q := url.Values{"force": {strconv.FormatBool(force)}}
	err := c.Do(ctx, http.MethodDelete, api.Prefix+"nodes/"+url.PathEscape(name)+"?"+q.Encode(), nil, 0, emptyHash, &out)
	return out, err
}

// JoinTokens lists the join tokens (without their secrets).
func (c *Client) JoinTokens(ctx context.Context) ([]api.JoinTokenInfo, error) {
	var out []api.JoinTokenInfo
	err := c.Do(ctx, http.MethodGet, api.Prefix+"tokens", nil, 0, emptyHash, &out)
	return out, err
}

// DeleteJoinToken revokes a join token by ID.
func (c *Client) DeleteJoinToken(ctx context.Context, id string) (api.DeleteTokenReply, error) {
	var out api.DeleteTokenReply
	err := c.Do(ctx, http.MethodDelete, api.Prefix+"tokens/"+url.PathEscape(id), nil, 0, emptyHash, &out)
	return out, err
}
