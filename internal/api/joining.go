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
	// JoinTokens lists the join tokens, without their secrets.
	JoinTokens(ctx context.Context) ([]JoinTokenInfo, error)
	// DeleteJoinToken revokes a join token.
	DeleteJoinToken(ctx context.Context, id string) (DeleteTokenReply, error)
	// RemoveNode forgets a node and revokes its certificates.
	RemoveNode(ctx context.Context, name string, force bool) (RemoveNodeReply, error)
}

// JoinTokenReply answers POST /clipper/v1/tokens.
type JoinTokenReply struct {
	Token   string    `json:"token"`
	Expires time.Time `json:"expires,omitzero"` // zero: never
}

// JoinTokenInfo is one join token in GET /clipper/v1/tokens.
type JoinTokenInfo struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires,omitzero"` // zero: never
	File    bool      `json:"file"`             // the one in the controller's DATA-DIR/join-token
}

// DeleteTokenReply answers DELETE /clipper/v1/tokens/{id}.
type DeleteTokenReply struct {
	ID string `json:"id"`
	// NewFileToken is the ID of the token now in DATA-DIR/join-token when
	// the revoked one was there.
	NewFileToken string `json:"new_file_token,omitempty"`
}

// RemoveNodeReply answers DELETE /clipper/v1/nodes/{name}.
type RemoveNodeReply struct {
	Name                string   `json:"name"`
	RevokedCertificates int      `json:"revoked_certificates"`
	TerminatedInstances []string `json:"terminated_instances"` // with --force: the instances lost with the node
	DeletedForwards     []string `json:"deleted_forwards"`     // the port forwards the node carried
}

// EnableJoining adds the admin calls for join tokens and node removal:
//
//	POST   /clipper/v1/tokens?ttl=24h          -> JoinTokenReply
//	GET    /clipper/v1/tokens                  -> []JoinTokenInfo
//	DELETE /clipper/v1/tokens/{id}             -> DeleteTokenReply
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
		{"GET " + Prefix + "tokens", func(r *http.Request, _ service.Caller, _ string) (any, error) {
			return j.JoinTokens(r.Context())
		}, true},
		{"DELETE " + Prefix + "tokens/{id}", func(r *http.Request, _ service.Caller, _ string) (any, error) {
			return j.DeleteJoinToken(r.Context(), r.PathValue("id"))
		}, true},
		{"DELETE " + Prefix + "nodes/{name}", func(r *http.Request, _ service.Caller, _ string) (any, error) {
			force, _ := strconv.ParseBool(r.URL.Query().Get("force"))
			return j.RemoveNode(r.Context(), r.PathValue("name"), force)
		}, true},
	} {
		h.mux.HandleFunc(rt.pattern, h.wrap(rt))
	}
}
