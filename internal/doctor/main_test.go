package doctor_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/cli"
	"github.com/clipper-cloud/clipper/internal/doctor"
)

// helperEnv makes the test binary act as a helper process instead of
// running tests: the clipper command line (the same code as the binary's
// main), the peer self-check, or a TLS server. Tests start helpers inside
// network namespaces with `ip netns exec`; with CLIPPER_BIN set, the real
// binary replaces the command line helper.
const helperEnv = "CLIPPER_DOCTOR_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

func runHelper(mode string, args []string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	switch mode {
	case "cli": // the clipper command line itself: `clipper ARGS...`
		return cli.Main(args)
	case "peer": // doctor.CheckPeer PEER MTU
		if len(args) != 2 {
			return doctor.ExitError
		}
		mtu, _ := strconv.Atoi(args[1])
		c, err := doctor.PeerChecker{Log: log}.Check(ctx, netip.MustParseAddr(args[0]), mtu)
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return doctor.ExitError
		}
		json.NewEncoder(os.Stdout).Encode(c)
		return 0
	case "tls-server": // ADDR: HTTPS with a large certificate chain
		if len(args) != 1 {
			return doctor.ExitError
		}
		if err := serveTLS(args[0]); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return doctor.ExitError
		}
		return 0
	}
	fmt.Fprintln(os.Stderr, "helper: unknown mode", mode)
	return doctor.ExitError
}

// bigChain makes a certificate chain of a root, two intermediates and a
// leaf with many names: about 10 KB, like the chains that hang in black
// holes. ECDSA keys keep it fast to make.
func bigChain() (tls.Certificate, error) {
	type node struct {
		cert *x509.Certificate
		key  *ecdsa.PrivateKey
	}
	var chain tls.Certificate
	var parent *node
	for i, name := range []string{"Doctor Test Root", "Doctor Test Intermediate A", "Doctor Test Intermediate B", "server.doctor.test"} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return chain, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 1)),
			Subject:      pkix.Name{CommonName: name, Organization: []string{"Clipper doctor tests"}},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
		}
		leaf := i == 3
		if leaf {
			tmpl.KeyUsage = x509.KeyUsageDigitalSignature
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			for j := range 150 {
				tmpl.DNSNames = append(tmpl.DNSNames, fmt.Sprintf("host-%03d.a-rather-long-name.doctor.test", j))
			}
		} else {
			tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
			tmpl.KeyUsage = x509.KeyUsageCertSign
			for j := range 20 { // padding, as real intermediates carry policies and URLs
				tmpl.PermittedDNSDomains = append(tmpl.PermittedDNSDomains, fmt.Sprintf("zone-%02d.doctor.test", j))
			}
		}
		signer, signKey := tmpl, key
		if parent != nil {
			signer, signKey = parent.cert, parent.key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
		if err != nil {
			return chain, err
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return chain, err
		}
		chain.Certificate = append([][]byte{der}, chain.Certificate...)
		if leaf {
			chain.PrivateKey = key
		}
		parent = &node{cert: cert, key: key}
	}
	chain.Certificate = chain.Certificate[:3] // leaf, B, A: the root is not sent
	return chain, nil
}

// serveTLS serves HTTPS on addr: GET /big streams 8 MiB, POST reads the
// body and answers its size, anything else answers "ok".
func serveTLS(addr string) error {
	cert, err := bigChain()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /big", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(8<<20))
		buf := make([]byte, 64<<10)
		for range (8 << 20) / len(buf) {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("POST /", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "got %d\n", n)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	srv := &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, ReadHeaderTimeout: 10 * time.Second}
	size := 0
	for _, c := range cert.Certificate {
		size += len(c)
	}
	fmt.Printf("ready %s chain %d bytes\n", ln.Addr(), size)
	return srv.ServeTLS(ln, "", "")
}
