package netns

import (
	"fmt"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs fn on an OS thread switched into the namespace and returns its
// error. Sockets fn makes belong to the namespace for their whole life and
// may be used from any goroutine afterwards; fn must not start goroutines
// that expect to run in the namespace. The thread is never reused (its
// goroutine ends still locked to it, which makes the runtime drop it).
func (n *NS) Do(fn func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread is in another namespace now.
		f, err := os.Open("/run/netns/" + n.Name)
		if err != nil {
			ch <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- fmt.Errorf("netns: setns %s: %w", n.Name, err)
			return
		}
		ch <- fn()
	}()
	return <-ch
}

// Listen opens a listening socket inside the namespace, so a test can run a
// server "in" a namespace without a helper process. Accept works from any
// goroutine.
func (n *NS) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := n.Do(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}
