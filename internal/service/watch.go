package service

import (
	"context"
	"sync"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/store"
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
// for changes (not polling) until ctx ends. until sees the stored instance
// (state, placement, addresses); the one returned is decorated like
// DescribeInstances' (tags, groups, public address).
func (s *Service) WaitInstance(ctx context.Context, c Caller, id string, until func(model.Instance) bool) (model.Instance, error) {
	for {
		changed := s.watch.watch(id)
		var insts []model.Instance
		done := false
		err := s.view(ctx, func(tx store.Tx) error {
			i, err := loadOne(tx, c, id)
			if err != nil {
				return err
			}
			insts = []model.Instance{i}
			if done = until(i); done {
				return s.decorate(tx, c.AccountID, insts)
			}
			return nil
		})
		if err != nil {
			return model.Instance{}, err
		}
		if done {
			return insts[0], nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return model.Instance{}, ctx.Err()
		}
	}
}

// loadOne is loadOwned for one instance, by its key: what a waiter reads
// at every change.
func loadOne(tx store.Tx, c Caller, id string) (model.Instance, error) {
	i, err := tx.GetInstance(id)
	if err == nil && i.AccountID != c.AccountID {
		err = model.NotFound(model.ResInstance, id)
	}
	return i, err
}
