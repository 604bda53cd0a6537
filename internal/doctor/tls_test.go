package doctor_test

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/doctor"
)

// The TLS check against loopback servers that misbehave the way servers
// behind a black hole seem to: no root, no namespaces, so these run with
// -short. A stalled server holds its handler until the test ends.

// stepTimeout keeps the stalls short; nothing here measures time.
const stepTimeout = 300 * time.Millisecond

// stallServer serves HTTPS on loopback with the handlers below; release
// ends every stalled handler (called by the cleanup before the server
// closes).
func stallServer(t *testing.T, mux *http.ServeMux) (*httptest.Server, <-chan struct{}) {
	t.Helper()
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the stalls end in handshake errors
	srv.StartTLS()
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	return srv, release
}

func addrOf(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

func checkTLS(t *testing.T, addr string, u string, upload int64) *doctor.TLSReport {
	t.Helper()
	o := doctor.TLSOptions{Addr: addrOf(t, addr), StepTimeout: stepTimeout, Upload: upload}
	if u != "" {
		var err error
		if o.URL, err = url.Parse(u); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	r, err := doctor.CheckTLS(ctx, o)
	if err != nil {
		t.Fatalf("CheckTLS: %v", err)
	}
	return r
}

func TestCheckTLSWorks(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /big", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(1<<20))
		w.Write(make([]byte, 1<<20))
	})
	mux.HandleFunc("POST /big", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		io.WriteString(w, strconv.FormatInt(n, 10))
	})
	srv, _ := stallServer(t, mux)
	r := checkTLS(t, srv.Listener.Addr().String(), srv.URL+"/big", 0)
	if !r.Works() || r.Stalled() || r.Signature != "" {
		t.Fatalf("report %+v: want everything ok and no signature", r)
	}
	if r.Download.Bytes != 1<<20 || r.Upload.Bytes != 1<<20 {
		t.Errorf("download %d, upload %d bytes; want %d each", r.Download.Bytes, r.Upload.Bytes, 1<<20)
	}
	if r.Certs == 0 || r.ChainBytes == 0 || r.PeerMSS == 0 {
		t.Errorf("certs %d, chain %d bytes, peer MSS %d: want them measured", r.Certs, r.ChainBytes, r.PeerMSS)
	}
	// Loopback's segments are far larger than an Ethernet MTU.
	if r.RcvSegment <= 1500 {
		t.Errorf("rcv_segment = %d after a 1 MiB download over loopback, want the large segments seen", r.RcvSegment)
	}
}

func TestCheckTLSBodyStalls(t *testing.T) {
	for _, tt := range []struct {
		name  string
		first int // body bytes sent before the stall
		sig   string
	}{
		{"at 0 bytes", 0, "stalls at 0 bytes of body"},
		{"after the first window", 64 << 10, "stalls after 65536 bytes (about the first window)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mux := http.NewServeMux()
			var release <-chan struct{}
			mux.HandleFunc("GET /big", func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Length", strconv.Itoa(8<<20))
				w.WriteHeader(http.StatusOK)
				w.Write(make([]byte, tt.first))
				w.(http.Flusher).Flush()
				<-release
			})
			var srv *httptest.Server
			srv, release = stallServer(t, mux)
			r := checkTLS(t, srv.Listener.Addr().String(), srv.URL+"/big", 0)
			if r.Handshake != doctor.StepOK || r.Download == nil || r.Download.Status != doctor.StepStalled {
				t.Fatalf("report %+v, download %+v: want the handshake ok and the download stalled", r, r.Download)
			}
			if r.Download.Bytes != int64(tt.first) {
				t.Errorf("download stopped at %d bytes, want %d", r.Download.Bytes, tt.first)
			}
			if !strings.Contains(r.Signature, tt.sig) {
				t.Errorf("signature %q, want %q", r.Signature, tt.sig)
			}
			if r.Works() || !r.Stalled() {
				t.Errorf("works %v stalled %v, want a stall", r.Works(), r.Stalled())
			}
		})
	}
}

func TestCheckTLSUploadStalls(t *testing.T) {
	mux := http.NewServeMux()
	var release <-chan struct{}
	mux.HandleFunc("GET /up", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "small\n") })
	mux.HandleFunc("POST /up", func(http.ResponseWriter, *http.Request) { <-release }) // never reads the body
	var srv *httptest.Server
	srv, release = stallServer(t, mux)
	// More than loopback's socket buffers hold, so writes block.
	const upload = 32 << 20
	r := checkTLS(t, srv.Listener.Addr().String(), srv.URL+"/up", upload)
	if r.Download == nil || r.Download.Status != doctor.StepOK {
		t.Fatalf("download %+v, want the small GET ok", r.Download)
	}
	if r.Upload == nil || r.Upload.Status != doctor.StepStalled || r.Upload.Bytes >= upload {
		t.Fatalf("upload %+v, want it stalled short of %d bytes", r.Upload, upload)
	}
	if !strings.Contains(r.Signature, "the upload stalls after") {
		t.Errorf("signature %q, want the upload stall named", r.Signature)
	}
}

// stallProxy forwards to backend, but passes only the first limit bytes
// of the backend's answer on each connection: the server's flight that
// stops half way, as when its larger segments vanish.
func stallProxy(t *testing.T, backend string, limit int64) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", backend)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, b)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(b, c) }()
			go func() {
				defer wg.Done()
				io.CopyN(c, b, limit)
				io.Copy(io.Discard, b) // the rest vanishes
			}()
		}
	}()
	return ln.Addr().String()
}

func TestCheckTLSHandshakeStalls(t *testing.T) {
	srv, _ := stallServer(t, http.NewServeMux())
	backend := srv.Listener.Addr().String()
	for _, tt := range []struct {
		name  string
		limit int64
		sig   string
	}{
		{"after the first flight", 0, "stalls after the first flight"},
		{"mid-flight", 100, "stalls mid-flight"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := checkTLS(t, stallProxy(t, backend, tt.limit), "", 0)
			if r.Connect != doctor.StepOK || r.Handshake != doctor.StepStalled {
				t.Fatalf("report %+v: want connect ok, handshake stalled", r)
			}
			if r.ServerBytes != tt.limit || r.ClientBytes == 0 {
				t.Errorf("server sent %d bytes, client %d; want %d and the ClientHello", r.ServerBytes, r.ClientBytes, tt.limit)
			}
			if !strings.Contains(r.Signature, tt.sig) {
				t.Errorf("signature %q, want %q", r.Signature, tt.sig)
			}
		})
	}
}

func TestCheckTLSRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	r := checkTLS(t, addr, "", 0)
	if r.Connect != doctor.StepFailed || r.Works() || r.Stalled() || r.Signature != "" {
		t.Fatalf("report %+v: want connect failed, no stall, no signature", r)
	}
}

// A server that answers an upload before reading it (here: 413) and
// closes the connection has not hung: the upload is skipped, not failed.
func TestCheckTLSUploadRefusedEarly(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello\n") })
	mux.HandleFunc("POST /", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	})
	srv, _ := stallServer(t, mux)
	r := checkTLS(t, srv.Listener.Addr().String(), srv.URL+"/", 8<<20)
	if r.Upload == nil || r.Upload.Status != doctor.StepSkipped || !strings.Contains(r.Upload.Detail, "413") {
		t.Fatalf("upload %+v, want skipped with the server's 413", r.Upload)
	}
	if !r.Works() || r.Stalled() {
		t.Errorf("works %v stalled %v, want a working check", r.Works(), r.Stalled())
	}
}

func TestCheckPlainHTTP(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "hello\n")
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	r := checkTLS(t, srv.Listener.Addr().String(), srv.URL+"/", 0)
	if r.Handshake != doctor.StepSkipped || !r.Works() {
		t.Fatalf("report %+v, download %+v, upload %+v: want the handshake skipped and the check working", r, r.Download, r.Upload)
	}
	if r.Download.Bytes != int64(len("hello\n")) {
		t.Errorf("download %d bytes, want %d", r.Download.Bytes, len("hello\n"))
	}
}
