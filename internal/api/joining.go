package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/service"
)

// Joining is what the controller does for the join calls: its CA makes the
// tokens and revokes removed nodes' certificates.
type Joining interface {
	// CreateJoinToken makes a join token valid for ttl (0: no expiry).
	CreateJoinToken(ctx context.Context, ttl time.Duration) (token string, expires time.Time, err error)
	// RemoveNode marks a node down and revokes its certificates.
	RemoveNode(ctx context.Context, name string, force bool) (revoked int, err error)
}

// JoinTokenReply answers POST /clipper/v1/tokens.
type JoinTokenReply struct {
	Token   string    `json:"token"`
	Expires time.Time `json:"expires,omitzero"` // zero: never
}

// RemoveNodeReply answers DELETE /clipper/v1/nodes/{name}.
type RemoveNodeReply struct {
	Name                string `json:"name"`
	RevokedCertificates int    `json:"revoked_certificates"`
}

// EnableJoining adds the admin calls for join tokens and node removal:
//
//	POST   /clipper/v1/tokens?ttl=24h          -> JoinTokenReply
//	DELETE /clipper/v1/nodes/{name}[?force=1]  -> RemoveNodeReply
func (h *Handler) EnableJoining(j Joining) {
	for _, rt := range []route{
		{"POST " + Prefix + "tokens", func(r *http.Request, _ service.Caller, _ string) (any, error) {
			ttl := 24 * time.Hour
			if s := r.URL.Query().Get("ttl"); s != "" {
				d, err := time.ParseDuration(s)
				if err != nil || d < 0 {
					return nil, model.InvalidParam("ttl", "ttl must be a duration such as 24h, or 0 for a token that does not expire")
				}
				ttl = d
			}
			tok, exp, err := j.CreateJoinToken(r.Context(), ttl)
			return JoinTokenReply{Token: tok, Expires: exp}, err
		}, true},
		{"DELETE " + Prefix + "nodes/{name}", func(r *http.Request, _ service.Caller, _ string) (any, error) {
			name := r.PathValue("name")
			force, _ := strconv.ParseBool(r.URL.Query().Get("force"))
			n, err := j.RemoveNode(r.Context(), name, force)
			return RemoveNodeReply{Name: name, RevokedCertificates: n}, err
		}, true},
	} {
		h.mux.HandleFunc(rt.pattern, h.wrap(rt))
	}
}
