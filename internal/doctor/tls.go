package doctor

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// TLS and transfer outcomes, as in TLSReport.
const (
	StepOK        = "ok"
	StepStalled   = "stalled"
	StepFailed    = "failed"
	StepSkipped   = "skipped"
	StepNotTested = "not-tested"
)

// TLSOptions says what the TLS check connects to.
type TLSOptions struct {
	// Addr is the server's address and port.
	Addr netip.AddrPort
	// ServerName is sent in SNI; empty sends none.
	ServerName string
	// URL, when set, adds a download (GET) and an upload (POST) over it;
	// http URLs are checked without TLS.
	URL *url.URL
	// StepTimeout bounds the connect, the handshake and each silence
	// during a transfer (default 3 s).
	StepTimeout time.Duration
	// Download is how much of the body is read at most (default 8 MiB);
	// Upload is the size of the POST body (default 1 MiB).
	Download, Upload int64
	// Log receives progress at debug level.
	Log *slog.Logger
}

// TLSReport is what the TLS check saw.
type TLSReport struct {
	Port int `json:"port"`
	// Connect is ok or failed (TCP three-way handshake: small packets).
	Connect       string  `json:"connect"`
	ConnectDetail string  `json:"connect_detail,omitempty"`
	ConnectMS     float64 `json:"connect_ms"`
	// Handshake is ok, stalled or failed (or skipped for http URLs).
	Handshake       string  `json:"handshake"`
	HandshakeDetail string  `json:"handshake_detail,omitempty"`
	HandshakeMS     float64 `json:"handshake_ms,omitempty"`
	// ClientBytes and ServerBytes count what crossed during the handshake.
	ClientBytes int64 `json:"client_bytes"`
	ServerBytes int64 `json:"server_bytes"`
	// ChainBytes and Certs describe the server's certificate chain.
	ChainBytes int `json:"chain_bytes,omitempty"`
	Certs      int `json:"certs,omitempty"`
	// PeerMSS is the MSS the server's SYN-ACK carried, as this host's TCP
	// uses it; PMTU is what this host's TCP believes the path MTU is.
	PeerMSS int `json:"peer_mss,omitempty"`
	PMTU    int `json:"pmtu,omitempty"`
	// RcvSegment is the largest segment that arrived from the server, as an
	// IP packet size (headers and TCP options included), from the kernel's
	// estimate of the server's MSS (tcpi_rcv_mss); 0 when nothing larger
	// than the kernel's initial guess arrived.
	RcvSegment int       `json:"rcv_segment,omitempty"`
	Download   *Transfer `json:"download,omitempty"`
	Upload     *Transfer `json:"upload,omitempty"`
	// Signature is the hang pattern recognised, in words; empty when none.
	Signature string `json:"signature,omitempty"`
}

// Transfer is one direction of the large transfer.
type Transfer struct {
	Status  string  `json:"status"`
	Bytes   int64   `json:"bytes"`
	Want    int64   `json:"want"`
	Seconds float64 `json:"seconds"`
	Detail  string  `json:"detail,omitempty"`
}

// Stalled reports whether any step hung (as opposed to failing at once).
func (r *TLSReport) Stalled() bool {
	if r == nil {
		return false
	}
	return r.Handshake == StepStalled ||
		(r.Download != nil && r.Download.Status == StepStalled) ||
		(r.Upload != nil && r.Upload.Status == StepStalled)
}

// Works reports whether the handshake and every transfer tried succeeded.
func (r *TLSReport) Works() bool {
	if r == nil || r.Connect != StepOK || (r.Handshake != StepOK && r.Handshake != StepSkipped) {
		return false
	}
	for _, t := range []*Transfer{r.Download, r.Upload} {
		if t != nil && t.Status != StepOK && t.Status != StepSkipped {
			return false
		}
	}
	return true
}

// countConn counts the bytes that cross a connection.
type countConn struct {
	net.Conn
	read, written atomic.Int64
}

func (c *countConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.read.Add(int64(n))
	return n, err
}

func (c *countConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.written.Add(int64(n))
	return n, err
}

// tcpInfo reads the kernel's TCP_INFO for a TCP connection.
func tcpInfo(c net.Conn) (*unix.TCPInfo, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, errors.New("not a TCP connection")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		return nil, err
	}
	return info, ierr
}

// CheckTLS connects, runs a TLS handshake and, with a URL, a download and
// an upload, each with short timeouts, and names the hang pattern it sees.
// Errors of the server (refused connection, HTTP errors) are results, not
// errors; the error return is for a cancelled ctx only.
func CheckTLS(ctx context.Context, o TLSOptions) (*TLSReport, error) {
	if o.StepTimeout == 0 {
		o.StepTimeout = 3 * time.Second
	}
	if o.Download == 0 {
		o.Download = 8 << 20
	}
	if o.Upload == 0 {
		o.Upload = 1 << 20
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	useTLS := o.URL == nil || o.URL.Scheme != "http"
	r := &TLSReport{Port: int(o.Addr.Port()), Handshake: StepNotTested}
	conn, err := dialStep(ctx, o, useTLS, r)
	if err != nil {
		return r, err
	}
	if conn == nil {
		r.Signature = signature(r)
		return r, nil
	}
	if o.URL == nil {
		conn.Close()
		r.Signature = signature(r)
		return r, nil
	}
	r.Download = download(ctx, o, conn)
	noteReceived(r, conn.tcp)
	conn.Close()
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	up := &TLSReport{}
	conn, err = dialStep(ctx, o, useTLS, up)
	switch {
	case err != nil:
		return r, err
	case conn == nil:
		r.Upload = &Transfer{Status: StepFailed, Want: o.Upload, Detail: "second connection failed: " + up.HandshakeDetail + up.ConnectDetail}
	default:
		r.Upload = upload(ctx, o, conn)
		conn.Close()
	}
	r.Signature = signature(r)
	return r, ctx.Err()
}

// tlsConn pairs the connection requests go over with the TCP connection
// below it (for TCP_INFO) and its byte counter.
type tlsConn struct {
	net.Conn
	tcp   net.Conn
	count *countConn
}

// dialStep connects and, for TLS, shakes hands; it fills the connect and
// handshake fields of r. A nil connection with a nil error means the step
// failed and r says why.
func dialStep(ctx context.Context, o TLSOptions, useTLS bool, r *TLSReport) (*tlsConn, error) {
	d := net.Dialer{Timeout: o.StepTimeout}
	start := time.Now()
	raw, err := d.DialContext(ctx, "tcp", o.Addr.String())
	r.ConnectMS = ms(time.Since(start))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		r.Connect, r.ConnectDetail = StepFailed, err.Error()
		return nil, nil
	}
	r.Connect = StepOK
	cc := &countConn{Conn: raw}
	tc := &tlsConn{Conn: cc, tcp: raw, count: cc}
	if info, err := tcpInfo(raw); err == nil {
		r.PeerMSS = int(info.Snd_mss)
		if info.Options&tcpiOptTimestamps != 0 {
			r.PeerMSS += tcpTimestampOption // taken off the MSS
		}
		r.PMTU = int(info.Pmtu)
	}
	if !useTLS {
		r.Handshake = StepSkipped
		return tc, nil
	}
	cfg := &tls.Config{
		ServerName: o.ServerName,
		// The check is about the transport: a certificate that does not
		// verify still shows whether the handshake's packets get through.
		InsecureSkipVerify: true, //nolint:gosec // transport diagnosis only
		NextProtos:         []string{"http/1.1"},
		// Classic key shares keep the ClientHello small (the post-quantum
		// share makes it ~1.5 KB, more than one segment), so a stall
		// points at the server's flight, not at ours.
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256},
	}
	tl := tls.Client(cc, cfg)
	hctx, cancel := context.WithTimeout(ctx, o.StepTimeout)
	defer cancel()
	start = time.Now()
	err = tl.HandshakeContext(hctx)
	r.HandshakeMS = ms(time.Since(start))
	r.ClientBytes, r.ServerBytes = cc.written.Load(), cc.read.Load()
	noteReceived(r, raw)
	if err != nil {
		defer raw.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if hctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
			r.Handshake = StepStalled
			acked := int64(-1)
			if info, err := tcpInfo(raw); err == nil {
				acked = int64(info.Bytes_acked)
			}
			switch {
			case r.ServerBytes == 0 && acked >= 0 && acked < r.ClientBytes:
				r.HandshakeDetail = fmt.Sprintf("the server acknowledged only %d of the ClientHello's %d bytes: this host's own full-size segments vanish", acked, r.ClientBytes)
			case r.ServerBytes == 0:
				r.HandshakeDetail = fmt.Sprintf("the ClientHello went out (%d bytes) and nothing of the server's reply arrived in %s", r.ClientBytes, o.StepTimeout)
			default:
				r.HandshakeDetail = fmt.Sprintf("the server's reply stopped after %d bytes; nothing more arrived in %s", r.ServerBytes, o.StepTimeout)
			}
			return nil, nil
		}
		r.Handshake, r.HandshakeDetail = StepFailed, err.Error()
		return nil, nil
	}
	r.Handshake = StepOK
	for _, c := range tl.ConnectionState().PeerCertificates {
		r.ChainBytes += len(c.Raw)
		r.Certs++
	}
	o.Log.Debug("tls handshake done", "server_bytes", r.ServerBytes, "chain_bytes", r.ChainBytes)
	tc.Conn = tl
	return tc, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// requestTarget is the path and query of u, "/" when empty.
func requestTarget(u *url.URL) string {
	if t := u.RequestURI(); t != "" {
		return t
	}
	return "/"
}

// download sends a GET and reads the body until it ends, the limit is
// reached, or nothing arrives for a step timeout.
func download(ctx context.Context, o TLSOptions, c *tlsConn) *Transfer {
	t := &Transfer{Want: o.Download}
	start := time.Now()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: clipper-doctor\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n", requestTarget(o.URL), o.URL.Host)
	c.SetDeadline(time.Now().Add(o.StepTimeout))
	if _, err := io.WriteString(c, req); err != nil {
		t.Status, t.Detail = StepFailed, "sending the request: "+err.Error()
		return t
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Seconds = time.Since(start).Seconds()
		if isTimeout(err) {
			t.Status, t.Detail = StepStalled, fmt.Sprintf("the response never arrived (%d bytes received in %s)", c.count.read.Load(), o.StepTimeout)
		} else {
			t.Status, t.Detail = StepFailed, "reading the response: "+err.Error()
		}
		return t
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Status, t.Detail = StepSkipped, "the URL answers "+resp.Status+": no body to download"
		return t
	}
	if resp.ContentLength > 0 && resp.ContentLength < t.Want {
		t.Want = resp.ContentLength
	}
	buf := make([]byte, 64<<10)
	for t.Bytes < t.Want {
		c.SetReadDeadline(time.Now().Add(o.StepTimeout))
		n, err := resp.Body.Read(buf)
		t.Bytes += int64(n)
		if err == io.EOF {
			t.Want = t.Bytes
			break
		}
		if err != nil {
			t.Seconds = time.Since(start).Seconds()
			if isTimeout(err) {
				t.Status = StepStalled
				t.Detail = fmt.Sprintf("the body stopped at %d bytes; nothing more arrived in %s", t.Bytes, o.StepTimeout)
			} else {
				t.Status, t.Detail = StepFailed, err.Error()
			}
			return t
		}
	}
	t.Seconds = time.Since(start).Seconds()
	t.Status = StepOK
	return t
}

// upload POSTs a body and waits for any answer; TCP_INFO tells how much of
// it the server acknowledged.
func upload(ctx context.Context, o TLSOptions, c *tlsConn) *Transfer {
	t := &Transfer{Want: o.Upload}
	start := time.Now()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: clipper-doctor\r\nContent-Type: application/octet-stream\r\nContent-Length: %s\r\nConnection: close\r\n\r\n",
		requestTarget(o.URL), o.URL.Host, strconv.FormatInt(o.Upload, 10))
	acked := func() int64 {
		info, err := tcpInfo(c.tcp)
		if err != nil {
			return 0
		}
		return int64(info.Bytes_acked)
	}
	// Every write may block while the path eats full-size segments; give the
	// whole body the step timeout, then look at what was acknowledged.
	c.SetWriteDeadline(time.Now().Add(o.StepTimeout))
	_, err := io.WriteString(c, head)
	buf := make([]byte, 32<<10)
	for sent := int64(0); err == nil && sent < o.Upload; {
		n := min(int64(len(buf)), o.Upload-sent)
		var w int
		w, err = c.Write(buf[:n])
		sent += int64(w)
	}
	if err == nil {
		c.SetReadDeadline(time.Now().Add(o.StepTimeout))
		var resp *http.Response
		resp, err = http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			resp.Body.Close()
			t.Bytes = min(acked(), o.Upload)
			t.Seconds = time.Since(start).Seconds()
			t.Status, t.Detail = StepOK, "the server answered "+resp.Status
			return t
		}
	}
	t.Bytes = min(acked(), o.Upload)
	t.Seconds = time.Since(start).Seconds()
	if !isTimeout(err) {
		// A server may answer before it reads the body (an error status, a
		// size limit) and close the connection: not a path problem, and the
		// path carried what was acknowledged.
		c.SetReadDeadline(time.Now().Add(o.StepTimeout))
		if resp, rerr := http.ReadResponse(bufio.NewReader(c), nil); rerr == nil {
			resp.Body.Close()
			t.Status = StepSkipped
			t.Detail = fmt.Sprintf("the server answered %s after %d bytes without taking the rest of the body", resp.Status, t.Bytes)
			return t
		}
	}
	if isTimeout(err) {
		t.Status = StepStalled
		t.Detail = fmt.Sprintf("the server acknowledged %d of %d bytes; nothing more in %s", t.Bytes, o.Upload, o.StepTimeout)
		return t
	}
	t.Status, t.Detail = StepFailed, err.Error()
	return t
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// signature names the hang pattern in r.
func signature(r *TLSReport) string {
	small := "the TCP connection opens (small packets pass)"
	switch {
	case r.Connect != StepOK:
		return ""
	case r.Handshake == StepStalled && r.ServerBytes == 0:
		return "TLS handshake stalls after the first flight: " + small + ", the server's certificate flight never arrives"
	case r.Handshake == StepStalled:
		return "TLS handshake stalls mid-flight: the first packets of the server's reply arrive, the rest never do"
	case r.Download != nil && r.Download.Status == StepStalled && r.Download.Bytes == 0:
		return "the download stalls at 0 bytes of body although the handshake works"
	case r.Download != nil && r.Download.Status == StepStalled:
		return fmt.Sprintf("the download stalls after %d bytes (about the first window)", r.Download.Bytes)
	case r.Upload != nil && r.Upload.Status == StepStalled:
		return fmt.Sprintf("the upload stalls after %d bytes acknowledged", r.Upload.Bytes)
	}
	return ""
}

// tcpiOptTimestamps is TCPI_OPT_TIMESTAMPS from linux/tcp.h.
const tcpiOptTimestamps = 1

// tcpTimestampOption is the size of the TCP timestamp option with its
// padding, which every segment of a connection that negotiated it carries.
const tcpTimestampOption = 12

// tcpMSSDefault is the kernel's first guess of the peer's segment size
// (TCP_MSS_DEFAULT): a receive MSS above it was measured on real segments.
const tcpMSSDefault = 536

// noteReceived records in r the largest segment that has arrived on c, as
// an IP packet size.
func noteReceived(r *TLSReport, c net.Conn) {
	info, err := tcpInfo(c)
	if err != nil || info.Rcv_mss <= tcpMSSDefault {
		return
	}
	seg := int(info.Rcv_mss) + tcpHeader + ipv4Header
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok && a.IP.To4() == nil {
		seg += ipv6Header - ipv4Header
	}
	if info.Options&tcpiOptTimestamps != 0 {
		seg += tcpTimestampOption
	}
	r.RcvSegment = max(r.RcvSegment, seg)
}
