package qemu

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// tunnel carries each connection accepted on a listener to a connection
// it dials, in both directions, until either side closes. A move's
// streams go through tunnels when they are encrypted: QEMU speaks plain
// on a unix socket in the VM's directory, and the tunnel speaks TLS to
// the other node.
type tunnel struct {
	ln    net.Listener
	admit func(net.Conn) error // run on each accepted connection before dialing; nil admits all
	dial  func(context.Context) (net.Conn, error)
	log   *slog.Logger

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	err    error // the last connection refused or not carried
	wg     sync.WaitGroup
}

// tunnelDrainTimeout bounds the wait for a move's streams to end after
// QEMU finished sending.
const tunnelDrainTimeout = 30 * time.Second

// tunnelDialTimeout bounds admitting a connection (a TLS handshake) and
// dialing its other end.
const tunnelDialTimeout = 10 * time.Second

func startTunnel(ln net.Listener, admit func(net.Conn) error, dial func(context.Context) (net.Conn, error), log *slog.Logger) *tunnel {
	t := &tunnel{ln: ln, admit: admit, dial: dial, log: log, conns: map[net.Conn]struct{}{}}
	t.wg.Add(1)
	go t.serve()
	return t
}

func (t *tunnel) serve() {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				t.log.Warn("move tunnel stopped accepting", "listener", t.ln.Addr(), "error", err)
			}
			return
		}
		if !t.track(c) {
			c.Close()
			return
		}
		t.wg.Add(1)
		go t.handle(c)
	}
}

// track records a live connection, so Close can end it; false once the
// tunnel is closed.
func (t *tunnel) track(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *tunnel) untrack(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

func (t *tunnel) handle(in net.Conn) {
	defer t.wg.Done()
	defer t.untrack(in)
	defer in.Close()
	ctx, cancel := context.WithTimeout(context.Background(), tunnelDialTimeout)
	defer cancel()
	if t.admit != nil {
		in.SetDeadline(time.Now().Add(tunnelDialTimeout))
		if err := t.admit(in); err != nil {
			t.log.Warn("move tunnel refused a connection", "from", in.RemoteAddr(), "error", err)
			t.setError(err)
			return
		}
		in.SetDeadline(time.Time{})
	}
	out, err := t.dial(ctx)
	if err != nil {
		t.log.Warn("move tunnel could not reach the other end", "error", err)
		t.setError(err)
		return
	}
	if !t.track(out) {
		out.Close()
		return
	}
	defer t.untrack(out)
	defer out.Close()
	splice(in, out)
}

// splice copies both ways until both directions ended; a side that
// finished sending is half-closed on the other, so each end sees EOF.
func splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, err := io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && err == nil {
			cw.CloseWrite()
		} else {
			// An error either way ends both.
			a.Close()
			b.Close()
		}
		done <- struct{}{}
	}
	go pipe(a, b)
	go pipe(b, a)
	<-done
	<-done
}

func (t *tunnel) setError(err error) {
	t.mu.Lock()
	t.err = err
	t.mu.Unlock()
}

// lastError is why the tunnel last refused or could not carry a
// connection (nil if it never did).
func (t *tunnel) lastError() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// drain stops accepting and waits up to timeout for the live
// connections to end on their own: each side has sent all it had and
// closed, so nothing in flight is lost. It closes what is left after the
// timeout and reports whether everything ended on its own.
func (t *tunnel) drain(timeout time.Duration) bool {
	t.ln.Close()
	done := make(chan struct{})
	go func() {
		t.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		t.Close()
		return false
	}
}

// Close stops accepting, ends every connection and waits for the
// tunnel's goroutines.
func (t *tunnel) Close() {
	t.mu.Lock()
	t.closed = true
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	t.ln.Close()
	t.wg.Wait()
}
