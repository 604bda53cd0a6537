package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clipper-cloud/clipper/internal/image"
	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/pki"
	"github.com/clipper-cloud/clipper/internal/service"
)

// maxReport bounds a report body (console tails included).
const maxReport = 32 << 20

// longPollMax is the longest a desired-state poll is held open.
const longPollMax = 60 * time.Second

// nodeServer serves the node protocol (see package nodeproto).
type nodeServer struct {
	svc     *service.Service
	blobs   *image.Blobs
	hub     *hub
	ca      *pki.CA
	certTTL time.Duration
	log     *slog.Logger

	mu  sync.Mutex
	ids map[string]string // node name -> node ID
}

func (n *nodeServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+nodeproto.PathJoin, n.join)
	mux.HandleFunc("POST "+nodeproto.PathRenew, n.auth(n.renew))
	mux.HandleFunc("POST "+nodeproto.PathRegister, n.auth(n.register))
	mux.HandleFunc("GET "+nodeproto.PathDesired, n.auth(n.desired))
	mux.HandleFunc("POST "+nodeproto.PathReport, n.auth(n.report))
	mux.HandleFunc("GET "+nodeproto.PathBlobs+"{sha}", n.auth(n.blob))
	return mux
}

type ctxKey int

const (
	keyName ctxKey = iota
	keyID
)

// auth admits requests made with a valid node certificate. The node is the
// certificate's CN: the X-Clipper-Node header, when sent, must name that
// node's ID.
func (n *nodeServer) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			nodeError(w, http.StatusUnauthorized, "a node certificate is required: join the node with a join token first")
			return
		}
		name, err := n.ca.VerifyNode(r.TLS.PeerCertificates[0])
		if err != nil {
			status := http.StatusUnauthorized
			if errors.Is(err, pki.ErrRevoked) {
				status = http.StatusForbidden
			}
			n.log.Warn("node certificate refused", "remote", r.RemoteAddr, "cn", r.TLS.PeerCertificates[0].Subject.CommonName, "error", err)
			nodeError(w, status, err.Error())
			return
		}
		ctx := context.WithValue(r.Context(), keyName, name)
		if r.URL.Path != nodeproto.PathRegister && r.URL.Path != nodeproto.PathRenew {
			id, err := n.nodeID(r.Context(), name)
			if err != nil {
				n.fail(w, r, err)
				return
			}
			if h := r.Header.Get(nodeproto.HeaderNodeID); h != "" && h != id {
				nodeError(w, http.StatusForbidden, fmt.Sprintf("the certificate of node %s cannot act as node %s", name, h))
				return
			}
			ctx = context.WithValue(ctx, keyID, id)
		}
		next(w, r.WithContext(ctx))
	}
}

// nodeID finds the ID of a registered node by name.
func (n *nodeServer) nodeID(ctx context.Context, name string) (string, error) {
	n.mu.Lock()
	id, ok := n.ids[name]
	n.mu.Unlock()
	if ok {
		return id, nil
	}
	nodes, _, err := n.svc.Nodes(ctx)
	if err != nil {
		return "", err
	}
	for _, nd := range nodes {
		if nd.Name == name {
			n.remember(name, nd.ID)
			return nd.ID, nil
		}
	}
	return "", model.Errorf(model.KindNotFound, "", name, "node %s has not registered", name)
}

func (n *nodeServer) remember(name, id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ids == nil {
		n.ids = map[string]string{}
	}
	n.ids[name] = id
}

func certName(r *http.Request) string { s, _ := r.Context().Value(keyName).(string); return s }

// join trades a join token and a CSR for a node certificate.
func (n *nodeServer) join(w http.ResponseWriter, r *http.Request) {
	var req nodeproto.JoinRequest
	if err := decode(r, &req, 1<<20); err != nil {
		n.fail(w, r, err)
		return
	}
	tok, err := pki.ParseToken(req.Token)
	if err == nil {
		err = n.ca.CheckToken(tok)
	}
	if err != nil {
		n.log.Warn("join refused", "remote", r.RemoteAddr, "error", err)
		nodeError(w, http.StatusUnauthorized, strings.TrimPrefix(err.Error(), pki.ErrTokenRejected.Error()+": "))
		return
	}
	name, err := pki.CSRName([]byte(req.CSR))
	if err != nil {
		nodeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := n.nameFree(r, name); err != nil {
		n.log.Warn("join refused", "remote", r.RemoteAddr, "name", name, "error", err)
		if model.KindOf(err) == model.KindInUse {
			nodeError(w, http.StatusConflict, err.Error())
		} else {
			n.fail(w, r, err)
		}
		return
	}
	cert, err := n.ca.SignNode([]byte(req.CSR), name, n.certTTL)
	if err != nil {
		nodeError(w, http.StatusBadRequest, err.Error())
		return
	}
	n.log.Info("node joined", "name", cert.Subject.CommonName, "token", tok.ID, "remote", r.RemoteAddr,
		"serial", cert.SerialNumber.Text(16), "not_after", cert.NotAfter)
	reply(w, nodeproto.CertReply{Certificate: string(pki.CertPEM(cert.Raw)), CA: string(pki.CertPEM(n.ca.Cert().Raw))})
}

// nameFree refuses a join under the name of a node of the cloud: one that
// registered and was not removed, or that holds a live certificate. The
// node itself may join again (its certificate expired while it was away):
// it presents that certificate, which must be this CA's, for the name, and
// never revoked.
func (n *nodeServer) nameFree(r *http.Request, name string) error {
	used, err := n.svc.NodeNameInUse(r.Context(), name)
	if err != nil {
		return err
	}
	if !used && !n.ca.HasLiveCert(name) {
		return nil
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		if got, err := n.ca.VerifyNodeEver(r.TLS.PeerCertificates[0]); err == nil && got == name {
			return nil
		}
	}
	return model.Errorf(model.KindInUse, model.ResNode, name,
		"a node named %q is part of this cloud: join under another --name, or remove that node first with 'clipper node rm %s'", name, name)
}

// renew signs a new certificate for the node of the current one.
func (n *nodeServer) renew(w http.ResponseWriter, r *http.Request) {
	var req nodeproto.RenewRequest
	if err := decode(r, &req, 1<<20); err != nil {
		n.fail(w, r, err)
		return
	}
	cert, err := n.ca.SignNode([]byte(req.CSR), certName(r), n.certTTL)
	if err != nil {
		nodeError(w, http.StatusBadRequest, err.Error())
		return
	}
	n.log.Info("node certificate renewed", "name", certName(r), "serial", cert.SerialNumber.Text(16), "not_after", cert.NotAfter)
	reply(w, nodeproto.CertReply{Certificate: string(pki.CertPEM(cert.Raw)), CA: string(pki.CertPEM(n.ca.Cert().Raw))})
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

func nodeID(r *http.Request) string { s, _ := r.Context().Value(keyID).(string); return s }

func (n *nodeServer) register(w http.ResponseWriter, r *http.Request) {
	var reg nodeproto.Registration
	if err := decode(r, &reg, 1<<20); err != nil {
		n.fail(w, r, err)
		return
	}
	if reg.Name != certName(r) {
		nodeError(w, http.StatusForbidden, fmt.Sprintf("the certificate of node %s cannot register node %s", certName(r), reg.Name))
		return
	}
	rep, err := n.svc.RegisterNode(r.Context(), reg)
	if err != nil {
		n.fail(w, r, err)
		return
	}
	n.remember(reg.Name, rep.NodeID)
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
	if err == nil && rep.SelfCheck != nil {
		err = n.svc.RecordSelfCheck(r.Context(), nodeID(r), *rep.SelfCheck)
	}
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
