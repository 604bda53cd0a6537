package api

import (
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/service"
)

// ForwardRequest creates a port forward (POST /clipper/v1/forwards).
type ForwardRequest struct {
	Protocol string `json:"protocol,omitempty"` // tcp (default) or udp
	Listen   string `json:"listen"`             // PUBLIC_IP:PORT
	To       string `json:"to"`                 // ADDR:PORT
	Node     string `json:"node,omitempty"`     // node name
}

// ForwardInfo is one port forward.
type ForwardInfo struct {
	ID       string    `json:"id"`
	Protocol string    `json:"protocol"`
	Listen   string    `json:"listen"`
	To       string    `json:"to"`
	Node     string    `json:"node"` // node ID
	Created  time.Time `json:"created"`
}

func forwardInfo(f model.Forward) ForwardInfo {
	return ForwardInfo{ID: f.ID, Protocol: f.Protocol, Listen: hostPort(f.ListenIP, f.ListenPort),
		To: hostPort(f.TargetIP, f.TargetPort), Node: f.NodeID, Created: f.Created}
}

func hostPort(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }

func (h *Handler) createForward(r *http.Request, c service.Caller, _ string) (any, error) {
	var req ForwardRequest
	if err := decodeJSON(r, &req); err != nil {
		return nil, err
	}
	f, err := h.svc.CreateForward(r.Context(), c, service.ForwardSpec{Protocol: req.Protocol, Listen: req.Listen, To: req.To, Node: req.Node})
	if err != nil {
		return nil, err
	}
	return forwardInfo(f), nil
}

func (h *Handler) listForwards(r *http.Request, c service.Caller, _ string) (any, error) {
	fs, err := h.svc.Forwards(r.Context(), c)
	if err != nil {
		return nil, err
	}
	out := make([]ForwardInfo, 0, len(fs))
	for _, f := range fs {
		out = append(out, forwardInfo(f))
	}
	return out, nil
}

func (h *Handler) deleteForward(r *http.Request, c service.Caller, _ string) (any, error) {
	id := r.PathValue("id")
	if err := h.svc.DeleteForward(r.Context(), c, id); err != nil {
		return nil, err
	}
	return struct {
		ID string `json:"id"`
	}{id}, nil
}
