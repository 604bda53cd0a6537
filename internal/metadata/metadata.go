// Package metadata is the node's EC2-compatible instance metadata service
// (IMDS) at 169.254.169.254 and [fd00:ec2::254], port 80.
//
// It identifies the instance asking by the packet mark of the connection,
// never by its source address: the node's anti-spoofing chain marks every
// packet entering from an instance's port with that port's mark (an
// instance cannot choose it), and with net.ipv4.tcp_fwmark_accept=1 an
// accepted TCP socket carries the mark of the SYN that opened it. A
// connection whose mark belongs to no instance is refused (403).
//
// IMDSv2 as EC2 does it: PUT /latest/api/token with
// X-aws-ec2-metadata-token-ttl-seconds (1-21600) returns a token bound to
// the instance, sent with IP TTL (hop limit) = the instance's
// HttpPutResponseHopLimit; a token request carrying X-Forwarded-For is
// refused; GETs need the token when HttpTokens is "required" (the
// default). HttpEndpoint "disabled" answers 403 to everything.
package metadata

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

// Addresses the service listens on.
const (
	AddrIPv4 = "169.254.169.254:80"
	AddrIPv6 = "[fd00:ec2::254]:80"
)

// Server is the metadata service. It implements agent.Metadata.
type Server struct {
	log *slog.Logger
	key [32]byte
	now func() time.Time

	mu     sync.RWMutex
	byMark map[uint32]*entry
	byID   map[string]*entry
}

// entry is what the service knows of one instance.
type entry struct {
	id   string
	mark uint32
	opts nodeproto.MetadataOptions
	tree *node
}

// New returns a service that knows no instance yet.
func New(log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{log: log.With("component", "metadata"), now: time.Now,
		byMark: map[uint32]*entry{}, byID: map[string]*entry{}}
	if _, err := rand.Read(s.key[:]); err != nil {
		panic("metadata: no randomness for the token key: " + err.Error())
	}
	return s
}

// Set serves md for the instance whose connections carry mark, replacing
// what was served for the instance (or for the mark) before. Tokens stay
// valid while the instance keeps its mark.
func (s *Server) Set(id string, mark uint32, md nodeproto.InstanceMetadata, opts nodeproto.MetadataOptions) {
	e := &entry{id: id, mark: mark, opts: opts, tree: buildTree(md, opts)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.byID[id]; old != nil && s.byMark[old.mark] == old {
		delete(s.byMark, old.mark)
	}
	if old := s.byMark[mark]; old != nil && old.id != id {
		delete(s.byID, old.id)
	}
	s.byID[id] = e
	s.byMark[mark] = e
}

// Remove stops serving an instance.
func (s *Server) Remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.byID[id]; e != nil {
		delete(s.byID, id)
		if s.byMark[e.mark] == e {
			delete(s.byMark, e.mark)
		}
	}
}

func (s *Server) lookup(mark uint32) *entry {
	if mark == 0 {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byMark[mark]
}

// connInfo is what the service knows of a connection.
type connInfo struct {
	mark uint32
	// setHops sets the IP TTL (hop limit) of what the connection sends
	// from now on.
	setHops func(int) error
}

type connKey struct{}

// withConn attaches connection facts to a request context.
func withConn(ctx context.Context, ci *connInfo) context.Context {
	return context.WithValue(ctx, connKey{}, ci)
}

// connContext reads the mark of an accepted connection.
func connContext(ctx context.Context, c net.Conn) context.Context {
	ci := &connInfo{setHops: func(int) error { return errors.New("not a TCP connection") }}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return withConn(ctx, ci)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return withConn(ctx, ci)
	}
	var mark int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		mark, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK)
	}); err == nil && serr == nil {
		ci.mark = uint32(mark)
	}
	v6 := false
	if a, ok := tc.LocalAddr().(*net.TCPAddr); ok && a.IP.To4() == nil {
		v6 = true
	}
	ci.setHops = func(n int) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if v6 {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, n)
			} else {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, n)
			}
		})
		return errors.Join(err, serr)
	}
	return withConn(ctx, ci)
}

// Listen opens a listening socket on addr even before the address is
// local (IP_FREEBIND), so the service does not depend on the order in
// which the node sets itself up.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if strings.HasSuffix(network, "6") {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1)
			} else {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_FREEBIND, 1)
			}
		})
		return errors.Join(err, serr)
	}}
	network := "tcp4"
	if strings.HasPrefix(addr, "[") {
		network = "tcp6"
	}
	return lc.Listen(ctx, network, addr)
}

// fwmarkAccept is the sysctl the service depends on.
const fwmarkAccept = "/proc/sys/net/ipv4/tcp_fwmark_accept"

// ListenAndServe serves on AddrIPv4 and, where the node has IPv6, on
// AddrIPv6 until ctx ends. It refuses to start when accepted connections
// would not carry their instance's mark.
func (s *Server) ListenAndServe(ctx context.Context) error {
	if b, err := os.ReadFile(fwmarkAccept); err != nil || strings.TrimSpace(string(b)) != "1" {
		return fmt.Errorf("metadata: %s is not 1: connections would not carry their instance's mark", fwmarkAccept)
	}
	ln4, err := Listen(ctx, AddrIPv4)
	if err != nil {
		return fmt.Errorf("metadata: listen on %s: %w", AddrIPv4, err)
	}
	lns := []net.Listener{ln4}
	if ln6, err := Listen(ctx, AddrIPv6); err != nil {
		s.log.Warn("no IPv6 metadata endpoint", "address", AddrIPv6, "error", err)
	} else {
		lns = append(lns, ln6)
	}
	errc := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { errc <- s.Serve(ctx, ln) }()
	}
	var first error
	for range lns {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Serve answers metadata requests on ln until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ConnContext:       connContext,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		case <-done:
		}
	}()
	s.log.Info("metadata service listening", "address", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metadata: %w", err)
	}
	return nil
}
