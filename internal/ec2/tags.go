package ec2

import (
	"context"

	"github.com/clipper-cloud/clipper/internal/service"
	"github.com/clipper-cloud/clipper/internal/store"
)

type tagDescXML struct {
	ResourceID   string `xml:"resourceId"`
	ResourceType string `xml:"resourceType"`
	Key          string `xml:"key"`
	Value        string `xml:"value"`
}

type describeTagsResponse struct {
	Meta
	TagSet    List[tagDescXML] `xml:"tagSet"`
	NextToken string           `xml:"nextToken,omitempty"`
}

func (h *Handler) registerTags() {
	h.actions["CreateTags"] = h.createTags
	h.actions["DeleteTags"] = h.deleteTags
	h.actions["DescribeTags"] = h.describeTags
}

func (h *Handler) createTags(p *Params) (exec, error) {
	ids, err := p.List("ResourceId")
	if err != nil {
		return nil, err
	}
	tags, err := p.Tags("Tag")
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, c service.Caller) (response, error) {
		if err := h.svc.CreateTags(ctx, c, ids, tags); err != nil {
			return nil, err
		}
		return &BoolResponse{Return: true}, nil
	}, nil
}

func (h *Handler) deleteTags(p *Params) (exec, error) {
	ids, err := p.List("ResourceId")
	if err != nil {
		return nil, err
	}
	subs, err := p.Structs("Tag")
	if err != nil {
		return nil, err
	}
	var matches []store.TagMatch
	for _, s := range subs {
		k, err := s.Required("Key")
		if err != nil {
			return nil, err
		}
		// A Value parameter, even empty, restricts the delete to that value.
		has := s.Has("Value")
		matches = append(matches, store.TagMatch{Key: k, Value: s.Str("Value"), HasValue: has})
	}
	return func(ctx context.Context, c service.Caller) (response, error) {
		if err := h.svc.DeleteTags(ctx, c, ids, matches); err != nil {
			return nil, err
		}
		return &BoolResponse{Return: true}, nil
	}, nil
}

func (h *Handler) describeTags(p *Params) (exec, error) {
	filters, err := p.Filters()
	if err != nil {
		return nil, err
	}
	pg, err := p.Page()
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, c service.Caller) (response, error) {
		rows, next, err := h.svc.DescribeTags(ctx, c, filters, pg)
		if err != nil {
			return nil, err
		}
		out := &describeTagsResponse{TagSet: List[tagDescXML]{}, NextToken: next}
		for _, r := range rows {
			out.TagSet = append(out.TagSet, tagDescXML(r))
		}
		return out, nil
	}, nil
}
