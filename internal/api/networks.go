package api

import (
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/service"
)

// NetworkRequest creates a bridged network (POST /clipper/v1/networks).
type NetworkRequest struct {
	Name    string `json:"name,omitempty"`
	Bridge  string `json:"bridge"`  // existing host bridge on the nodes
	CIDR    string `json:"cidr"`    // the LAN
	Gateway string `json:"gateway"` // the LAN's router
	Range   string `json:"range"`   // FIRST-LAST handed out to instances
	Zone    string `json:"zone,omitempty"`
}

// NetworkInfo is one bridged network.
type NetworkInfo struct {
	VPCID    string    `json:"vpc_id"`
	SubnetID string    `json:"subnet_id"`
	Name     string    `json:"name,omitempty"`
	Bridge   string    `json:"bridge"`
	CIDR     string    `json:"cidr"`
	Gateway  string    `json:"gateway"`
	Range    string    `json:"range"`
	Zone     string    `json:"zone"`
	Created  time.Time `json:"created"`
}

func networkInfo(n service.BridgedNetwork) NetworkInfo {
	info := NetworkInfo{VPCID: n.VPC.ID, SubnetID: n.Subnet.ID, Bridge: n.VPC.Uplink, CIDR: n.Subnet.CIDR,
		Gateway: n.Subnet.Gateway, Range: n.Subnet.RangeFirst + "-" + n.Subnet.RangeLast, Zone: n.Subnet.Zone, Created: n.VPC.Created}
	for _, t := range n.VPC.Tags {
		if t.Key == "Name" {
			info.Name = t.Value
		}
	}
	return info
}

// maxJSONRequest bounds the body of a create call.
const maxJSONRequest = 4 << 10

// decodeJSON reads a small JSON request body into v.
func decodeJSON(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxJSONRequest+1))
	if err != nil || len(body) > maxJSONRequest {
		return model.InvalidParam("body", "The request body must be a JSON object of at most %d bytes", maxJSONRequest)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return model.InvalidParam("body", "The request body is not valid JSON: %v", err)
	}
	return nil
}

func (h *Handler) createNetwork(r *http.Request, c service.Caller, _ string) (any, error) {
	var req NetworkRequest
	if err := decodeJSON(r, &req); err != nil {
		return nil, err
	}
	n, err := h.svc.CreateBridgedNetwork(r.Context(), c, service.BridgedSpec{Name: req.Name, Uplink: req.Bridge,
		CIDR: req.CIDR, Gateway: req.Gateway, Range: req.Range, Zone: req.Zone})
	if err != nil {
		return nil, err
	}
	return networkInfo(n), nil
}

func (h *Handler) listNetworks(r *http.Request, c service.Caller, _ string) (any, error) {
	ns, err := h.svc.BridgedNetworks(r.Context(), c)
	if err != nil {
		return nil, err
	}
	out := make([]NetworkInfo, 0, len(ns))
	for _, n := range ns {
		out = append(out, networkInfo(n))
	}
	return out, nil
}

func (h *Handler) deleteNetwork(r *http.Request, c service.Caller, _ string) (any, error) {
	id := r.PathValue("id")
	if err := h.svc.DeleteBridgedNetwork(r.Context(), c, id); err != nil {
		return nil, err
	}
	return struct {
		ID string `json:"id"`
	}{id}, nil
}
