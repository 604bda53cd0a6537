package service

import (
	"context"
	"sync"

	"github.com/clipper-cloud/clipper/internal/model"
)

// watchers wakes those waiting on particular instances when they change.
type watchers struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

func (w *watchers) watch(id string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[string]chan struct{}{}
	}
	c, ok := w.m[id]
	if !ok {
		c = make(chan struct{})
		w.m[id] = c
	}
	return c
}

func (w *watchers) fire(ids ...string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range ids {
		if c, ok := w.m[id]; ok {
			close(c)
			delete(w.m, id)
		}
	}
}

// WaitInstance returns the instance once until reports true for it, waiting
// for changes (not polling) until ctx ends.
func (s *Service) WaitInstance(ctx context.Context, c Caller, id string, until func(model.Instance) bool) (model.Instance, error) {
	for {
		changed := s.watch.watch(id)
		res, _, err := s.DescribeInstances(ctx, c, []string{id}, nil, Page{})
		if err != nil {
			return model.Instance{}, err
		}
		if i := res[0].Instances[0]; until(i) {
			return i, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return model.Instance{}, ctx.Err()
		}
	}
}
