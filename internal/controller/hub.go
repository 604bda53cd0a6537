package controller

import "sync"

// hub wakes the desired-state long polls of nodes whose state changed.
// A watcher takes the node's channel before reading the store, so a change
// committed between the read and the wait is never missed.
type hub struct {
	mu sync.Mutex
	ch map[string]chan struct{}
}

func newHub() *hub { return &hub{ch: map[string]chan struct{}{}} }

// watch returns a channel closed at the node's next change.
func (h *hub) watch(node string) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	c, ok := h.ch[node]
	if !ok {
		c = make(chan struct{})
		h.ch[node] = c
	}
	return c
}

// NodesChanged implements service.Notifier.
func (h *hub) NodesChanged(ids ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range ids {
		if c, ok := h.ch[id]; ok {
			close(c)
			delete(h.ch, id)
		}
	}
}
