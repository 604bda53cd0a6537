// Package api is Clipper's native JSON API under /clipper/v1/, used by the
// clipper CLI and the console for what EC2 has no call for: uploading image
// blobs and managing nodes. Requests are SigV4-signed like EC2 calls.
package api

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/clipper-cloud/clipper/internal/ec2"
	"github.com/clipper-cloud/clipper/internal/image"
	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/service"
	"github.com/clipper-cloud/clipper/internal/store"
)

// MaxBlob is the largest blob accepted (a whole-disk image).
const MaxBlob = 64 << 30

// Prefix is where the native API lives.
const Prefix = "/clipper/v1/"

// handlerFunc is one API call: it returns a value to encode as JSON.
// payloadHash is what the signature says the body hashes to.
type handlerFunc func(r *http.Request, c service.Caller, payloadHash string) (any, error)

// route is one entry of the route table.
type route struct {
	pattern string // "METHOD /path"
	fn      handlerFunc
	admin   bool // only the admin account may call it
}

// Authenticator authenticates native API requests, whose bodies are
// streamed: it returns the payload hash the signature covers
// ("UNSIGNED-PAYLOAD" when none) for the handler to hold the body to.
type Authenticator interface {
	AuthenticateStream(r *http.Request) (c service.Caller, payloadHash string, err error)
}

// Handler serves the native API.
type Handler struct {
	svc   *service.Service
	st    store.Store
	blobs *image.Blobs
	auth  Authenticator
	log   *slog.Logger
	mux   *http.ServeMux
}

// New returns the API handler.
func New(svc *service.Service, st store.Store, blobs *image.Blobs, auth Authenticator, log *slog.Logger) *Handler {
	h := &Handler{svc: svc, st: st, blobs: blobs, auth: auth, log: log, mux: http.NewServeMux()}
	for _, rt := range []route{
		{"PUT " + Prefix + "blobs/{sha}", h.putBlob, false},
		{"GET " + Prefix + "nodes", h.listNodes, true},
		{"POST " + Prefix + "nodes/{name}/{action}", h.scheduleNode, true},
		{"POST " + Prefix + "instances/{id}/move", h.moveInstance, true},
		{"POST " + Prefix + "forwards", h.createForward, true},
		{"GET " + Prefix + "forwards", h.listForwards, true},
		{"DELETE " + Prefix + "forwards/{id}", h.deleteForward, true},
		{"POST " + Prefix + "networks", h.createNetwork, true},
		{"GET " + Prefix + "networks", h.listNetworks, true},
		{"DELETE " + Prefix + "networks/{id}", h.deleteNetwork, true},
	} {
		h.mux.HandleFunc(rt.pattern, h.wrap(rt))
	}
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// ErrorBody is the JSON error shape.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (h *Handler) wrap(rt route) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		c, payloadHash, err := h.auth.AuthenticateStream(r)
		if err == nil && rt.admin {
			err = h.requireAdmin(r, c)
		}
		var v any
		if err == nil {
			v, err = rt.fn(r, c, payloadHash)
		}
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			e := ec2.ErrorFor(err)
			if e.Status >= 500 {
				h.log.Error("api request failed", "path", r.URL.Path, "error", err)
			}
			w.WriteHeader(e.Status)
			json.NewEncoder(w).Encode(ErrorBody{Code: e.Code, Message: e.Message})
			return
		}
		json.NewEncoder(w).Encode(v)
		h.log.Debug("api request", "path", r.URL.Path, "took", time.Since(start))
	}
}

func (h *Handler) requireAdmin(r *http.Request, c service.Caller) error {
	var acct model.Account
	err := h.st.View(r.Context(), func(tx store.Tx) error {
		var err error
		acct, err = tx.GetAccount(c.AccountID)
		return err
	})
	if err != nil || acct.Name != service.AdminAccountName {
		return model.Errorf(model.KindUnauthorized, "", "", "Only the admin account may manage nodes")
	}
	return nil
}

// BlobReply answers an upload.
type BlobReply struct {
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

func (h *Handler) putBlob(r *http.Request, c service.Caller, payloadHash string) (any, error) {
	sha := r.PathValue("sha")
	if !image.ValidSHA256(sha) {
		return nil, model.InvalidParam("sha256", "The blob name must be the lower-case hex SHA-256 of its bytes")
	}
	// The blob store checks the bytes against the name; a signed payload
	// hash must name the same bytes.
	if payloadHash != "UNSIGNED-PAYLOAD" && payloadHash != sha {
		return nil, model.InvalidParam("X-Amz-Content-Sha256", "The signed payload hash is not the blob's name")
	}
	if r.ContentLength > MaxBlob {
		return nil, model.InvalidParam("Content-Length", "Blobs are limited to %d bytes", int64(MaxBlob))
	}
	size := int64(0)
	if !h.blobs.Has(sha) {
		n, err := h.blobs.Put(r.Body, sha, MaxBlob)
		if err != nil {
			return nil, model.InvalidParam("body", "Upload failed: %v", err)
		}
		size = n
	} else {
		rc, n, err := h.blobs.Open(sha)
		if err != nil {
			return nil, err
		}
		rc.Close()
		size = n
	}
	ref := model.BlobRef{SHA256: sha, Size: size}
	if err := h.st.Update(r.Context(), func(tx store.Tx) error { return tx.PutBlob(ref) }); err != nil {
		return nil, err
	}
	h.log.Info("blob uploaded", "sha256", sha, "size", size, "account", c.AccountID)
	return BlobReply{SHA256: sha, Size: size}, nil
}

// NodeInfo is one node of a node listing.
type NodeInfo struct {
	ID       string          `json:"id"`
	Name     string          `json:"name"`
	Zone     string          `json:"zone"`
	State    model.NodeState `json:"state"`
	Address  string          `json:"address"`
	Capacity model.Capacity  `json:"capacity"`
	Used     model.Capacity  `json:"used"`
	LastSeen time.Time       `json:"last_seen"`
	Version  string          `json:"version"`
	// SelfCheck is the node's latest overlay self-check (nil before its
	// first): the underlay MTU it proved toward its peer nodes and the
	// conditions it found, none on a healthy node.
	SelfCheck *model.NodeSelfCheck `json:"self_check,omitempty"`
	// Moves are the live migrations a drain started, and the instances it
	// could not move with the reason.
	Moves []service.Move `json:"moves,omitempty"`
}

func (h *Handler) listNodes(r *http.Request, c service.Caller, _ string) (any, error) {
	nodes, usage, err := h.svc.Nodes(r.Context())
	if err != nil {
		return nil, err
	}
	checks, err := h.svc.NodeSelfChecks(r.Context())
	if err != nil {
		return nil, err
	}
	out := make([]NodeInfo, 0, len(nodes))
	for _, n := range nodes {
		info := NodeInfo{ID: n.ID, Name: n.Name, Zone: n.Zone, State: n.Shown(), Address: n.Address,
			Capacity: n.Capacity, Used: usage[n.ID], LastSeen: n.LastSeen, Version: n.Version}
		if sc, ok := checks[n.ID]; ok {
			info.SelfCheck = &sc
		}
		out = append(out, info)
	}
	return out, nil
}
