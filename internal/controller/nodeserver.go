package controller

import (
	"crypto/subtle"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/clipper-cloud/clipper/internal/image"
	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/service"
)

// maxReport bounds a report body (console tails included).
const maxReport = 32 << 20

// longPollMax is the longest a desired-state poll is held open.
const longPollMax = 60 * time.Second

// nodeServer serves the node protocol (see package nodeproto).
type nodeServer struct {
	svc   *service.Service
	blobs *image.Blobs
	hub   *hub
	token string
	log   *slog.Logger
}

func (n *nodeServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+nodeproto.PathRegister, n.auth(n.register))
	mux.HandleFunc("GET "+nodeproto.PathDesired, n.auth(n.desired))
	mux.HandleFunc("POST "+nodeproto.PathReport, n.auth(n.report))
	mux.HandleFunc("GET "+nodeproto.PathBlobs+"{sha}", n.auth(n.blob))
	return mux
}

// auth checks the node token.
func (n *nodeServer) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(n.token)) != 1 {
			nodeError(w, http.StatusUnauthorized, "the node token is missing or wrong")
			return
		}
		next(w, r)
	}
}

func nodeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func (n *nodeServer) fail(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusInternalServerError
	switch model.KindOf(err) {
	case model.KindNotFound:
		status = http.StatusNotFound
	case model.KindInvalidParameter, model.KindMissingParameter, model.KindMalformed:
		status = http.StatusBadRequest
	case model.KindDuplicate:
		status = http.StatusConflict
	}
	if status >= 500 {
		n.log.Error("node request failed", "path", r.URL.Path, "error", err)
	}
	nodeError(w, status, err.Error())
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func decode(r *http.Request, v any, max int64) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, max))
	if err := dec.Decode(v); err != nil {
		return model.InvalidParam("body", "malformed JSON: %v", err)
	}
	return nil
}

func nodeID(r *http.Request) string { return r.Header.Get(nodeproto.HeaderNodeID) }

func (n *nodeServer) register(w http.ResponseWriter, r *http.Request) {
	var reg nodeproto.Registration
	if err := decode(r, &reg, 1<<20); err != nil {
		n.fail(w, r, err)
		return
	}
	rep, err := n.svc.RegisterNode(r.Context(), reg)
	if err != nil {
		n.fail(w, r, err)
		return
	}
	reply(w, rep)
}

func (n *nodeServer) desired(w http.ResponseWriter, r *http.Request) {
	id := nodeID(r)
	since, err := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
	if err != nil && r.URL.Query().Get("since") != "" {
		n.fail(w, r, model.InvalidParam("since", "since must be a revision number"))
		return
	}
	wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
	wait = min(max(wait, 0), longPollMax)
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	// A wake-up always answers: some changes (port forwards, which go as a
	// whole list) carry no revision the answer could be compared by.
	for woken := false; ; woken = true {
		changed := n.hub.watch(id)
		d, err := n.svc.NodeDesired(r.Context(), id, since)
		if err != nil {
			n.fail(w, r, err)
			return
		}
		if d.Changed() || wait == 0 || woken {
			reply(w, d)
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			reply(w, d)
			return
		case <-r.Context().Done():
			return
		}
	}
}

func (n *nodeServer) report(w http.ResponseWriter, r *http.Request) {
	var rep nodeproto.Report
	if err := decode(r, &rep, maxReport); err != nil {
		n.fail(w, r, err)
		return
	}
	out, err := n.svc.ReportNode(r.Context(), nodeID(r), rep)
	if err != nil {
		n.fail(w, r, err)
		return
	}
	reply(w, out)
}

func (n *nodeServer) blob(w http.ResponseWriter, r *http.Request) {
	sha := r.PathValue("sha")
	if !image.ValidSHA256(sha) {
		nodeError(w, http.StatusBadRequest, "invalid blob name")
		return
	}
	f, size, err := n.blobs.Open(sha)
	if err != nil {
		nodeError(w, http.StatusNotFound, "no such blob")
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	io.Copy(w, f)
}
