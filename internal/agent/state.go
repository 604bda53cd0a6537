package agent

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// localState is what the agent remembers about an instance across restarts:
// which desired revision it last carried out, and on which host boot.
type localState struct {
	AppliedRev int64  `json:"applied_rev"`
	RebootSeq  int    `json:"reboot_seq"`
	BootID     string `json:"boot_id"`
}

// stateFile keeps every instance's localState in one file. Changes are
// written by one goroutine, coalesced: losing the last few milliseconds in a
// crash only makes the next agent redo idempotent steps.
type stateFile struct {
	path string
	kick chan struct{}

	mu    sync.Mutex
	m     map[string]localState
	dirty bool
}

func openStateFile(dir string) (*stateFile, error) {
	s := &stateFile{path: filepath.Join(dir, "instances.json"), kick: make(chan struct{}, 1), m: map[string]localState{}}
	b, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &s.m); err != nil {
		// A torn file only costs redoing idempotent work.
		s.m = map[string]localState{}
	}
	return s, nil
}

func (s *stateFile) get(id string) localState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[id]
}

func (s *stateFile) set(id string, st localState) {
	s.mu.Lock()
	s.m[id], s.dirty = st, true
	s.mu.Unlock()
	s.poke()
}

func (s *stateFile) drop(id string) {
	s.mu.Lock()
	delete(s.m, id)
	s.dirty = true
	s.mu.Unlock()
	s.poke()
}

func (s *stateFile) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// run writes changes until ctx ends, then writes once more.
func (s *stateFile) run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return s.flush()
		case <-s.kick:
		}
		// Let a burst of changes pile up into one write.
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
		if err := s.flush(); err != nil {
			return err
		}
	}
}

func (s *stateFile) flush() error {
	s.mu.Lock()
	if !s.dirty {
		s.mu.Unlock()
		return nil
	}
	b, err := json.Marshal(s.m)
	s.dirty = false
	s.mu.Unlock()
	if err != nil {
		return err
	}
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.path)
}

func (a *Agent) loadState(id string) localState { return a.state.get(id) }

func (a *Agent) saveState(id string, st localState) error {
	a.state.set(id, st)
	return nil
}

func (a *Agent) dropState(id string) error {
	a.state.drop(id)
	return nil
}
