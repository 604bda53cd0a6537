// Package qmp is a minimal client for the QEMU Machine Protocol over a unix
// socket: capability negotiation, commands with IDs, and events skipped
// while waiting for a reply. It is small enough to own: the driver needs
// five commands and must bound every call with a context.
package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"time"
)

// Conn is one QMP session.
type Conn struct {
	mu   sync.Mutex
	c    net.Conn
	r    *bufio.Reader
	next int
}

// Error is an error answer from QEMU.
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string { return fmt.Sprintf("qmp: %s: %s", e.Class, e.Desc) }

type message struct {
	QMP    json.RawMessage `json:"QMP"`
	Event  string          `json:"event"`
	ID     *int            `json:"id"`
	Return json.RawMessage `json:"return"`
	Error  *Error          `json:"error"`
}

// Dial connects to a QMP socket and negotiates capabilities.
func Dial(ctx context.Context, path string) (*Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	q := &Conn{c: c, r: bufio.NewReaderSize(c, 64<<10)}
	if err := q.deadline(ctx); err != nil {
		c.Close()
		return nil, err
	}
	greet, err := q.read()
	if err != nil || greet.QMP == nil {
		c.Close()
		return nil, fmt.Errorf("qmp: no greeting from %s: %v", path, err)
	}
	if _, err := q.execLocked(ctx, "qmp_capabilities", nil); err != nil {
		c.Close()
		return nil, err
	}
	return q, nil
}

func (q *Conn) deadline(ctx context.Context) error {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(10 * time.Second)
	}
	return q.c.SetDeadline(dl)
}

func (q *Conn) read() (message, error) {
	line, err := q.r.ReadBytes('\n')
	if err != nil {
		return message{}, err
	}
	var m message
	if err := json.Unmarshal(line, &m); err != nil {
		return message{}, fmt.Errorf("qmp: bad message %q: %w", line, err)
	}
	return m, nil
}

// Execute runs a command and returns its "return" value.
func (q *Conn) Execute(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if err := q.deadline(ctx); err != nil {
		return nil, err
	}
	return q.execLocked(ctx, cmd, args)
}

func (q *Conn) execLocked(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	q.next++
	id := q.next
	req := map[string]any{"execute": cmd, "id": id}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if _, err := q.c.Write(append(b, '\n')); err != nil {
		return nil, err
	}
	for {
		m, err := q.read()
		if err != nil {
			return nil, err
		}
		if m.Event != "" || m.ID == nil || *m.ID != id {
			continue // events, and stale replies of timed-out calls
		}
		if m.Error != nil {
			return nil, m.Error
		}
		return m.Return, nil
	}
}

// Status is the VM run state ("running", "paused", "shutdown", ...).
func (q *Conn) Status(ctx context.Context) (string, error) {
	raw, err := q.Execute(ctx, "query-status", nil)
	if err != nil {
		return "", err
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return "", err
	}
	return st.Status, nil
}

// Close ends the session.
func (q *Conn) Close() error { return q.c.Close() }
