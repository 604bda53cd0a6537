// Package undo runs the reverse of a multi-step host change when a later
// step fails: u := undo.New(); defer u.Run(); ...; u.Add(f); ...; u.Success().
package undo

// Stack holds undo steps.
type Stack struct {
	fns  []func()
	done bool
}

// New returns an empty stack.
func New() *Stack { return &Stack{} }

// Add registers the undo of a step that just succeeded.
func (s *Stack) Add(f func()) { s.fns = append(s.fns, f) }

// Success keeps every step: Run does nothing afterwards.
func (s *Stack) Success() { s.done = true }

// Run undoes the steps in reverse order, unless Success was called.
func (s *Stack) Run() {
	if s.done {
		return
	}
	for i := len(s.fns) - 1; i >= 0; i-- {
		s.fns[i]()
	}
	s.done = true
}
