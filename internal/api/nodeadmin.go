package api

import (
	"net/http"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/service"
)

// scheduleActions are the operator's calls on a node:
//
//	POST /clipper/v1/nodes/{name}/cordon    no new instances
//	POST /clipper/v1/nodes/{name}/drain     no new instances; running ones move off
//	POST /clipper/v1/nodes/{name}/uncordon  schedulable again
var scheduleActions = map[string]model.NodeState{
	"cordon":   model.NodeCordoned,
	"drain":    model.NodeDraining,
	"uncordon": model.NodeReady,
}

func (h *Handler) scheduleNode(r *http.Request, _ service.Caller, _ string) (any, error) {
	to, ok := scheduleActions[r.PathValue("action")]
	if !ok {
		return nil, model.InvalidParam("action", "The node action must be cordon, drain or uncordon")
	}
	var n model.Node
	var moves []service.Move
	var err error
	if to == model.NodeDraining {
		n, moves, err = h.svc.DrainNode(r.Context(), r.PathValue("name"))
	} else {
		n, err = h.svc.SetNodeSchedule(r.Context(), r.PathValue("name"), to)
	}
	if err != nil {
		return nil, err
	}
	return NodeInfo{ID: n.ID, Name: n.Name, Zone: n.Zone, State: n.Shown(), Address: n.Address,
		Capacity: n.Capacity, LastSeen: n.LastSeen, Version: n.Version, Moves: moves}, nil
}

// MoveRequest asks for a live migration: Node names the destination, or is
// empty for the scheduler's choice.
type MoveRequest struct {
	Node string `json:"node,omitempty"`
}

// moveInstance is POST /clipper/v1/instances/{id}/move.
func (h *Handler) moveInstance(r *http.Request, _ service.Caller, _ string) (any, error) {
	var req MoveRequest
	if err := decodeJSON(r, &req); err != nil {
		return nil, err
	}
	return h.svc.MoveInstance(r.Context(), r.PathValue("id"), req.Node)
}
