package nodeproto

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/clipper-cloud/clipper/internal/pki"
)

// Paths of joining. Join is the only path served without a client
// certificate.
const (
	PathJoin  = "/node/v1/join"  // JoinRequest -> CertReply, authenticated by the token
	PathRenew = "/node/v1/renew" // RenewRequest -> CertReply, over mTLS
)

// JoinRequest trades a join token and a CSR (CN = node name) for a
// certificate.
type JoinRequest struct {
	Token string `json:"token"`
	CSR   string `json:"csr"` // PEM
}

// RenewRequest asks for a new certificate for the same node.
type RenewRequest struct {
	CSR string `json:"csr"` // PEM
}

// CertReply carries a signed node certificate and the CA.
type CertReply struct {
	Certificate string `json:"certificate"` // PEM
	CA          string `json:"ca"`          // PEM
}

// Identity is a node's certificate and the CA it trusts. It is safe for
// concurrent use; renewal replaces the certificate.
type Identity struct {
	dir string // "" keeps it in memory only
	ca  *x509.Certificate

	mu   sync.Mutex
	cert tls.Certificate
}

// Files an identity keeps in its directory.
const (
	fileKey  = "node.key"
	fileCert = "node.crt"
	fileCA   = "ca.crt"
)

// NewIdentity wraps a certificate issued in this process (clipper up).
func NewIdentity(cert tls.Certificate, ca *x509.Certificate) *Identity {
	return &Identity{cert: cert, ca: ca}
}

// LoadIdentity reads the identity a node stored in dir when it joined. The
// error wraps os.ErrNotExist if the node never joined.
func LoadIdentity(dir string) (*Identity, error) {
	caPEM, err := os.ReadFile(filepath.Join(dir, fileCA))
	if err != nil {
		return nil, err
	}
	ca, err := pki.ParseCertPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, fileCA), err)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, fileCert), filepath.Join(dir, fileKey))
	if err != nil {
		return nil, err
	}
	return &Identity{dir: dir, ca: ca, cert: cert}, nil
}

// Name is the node name the certificate carries.
func (id *Identity) Name() string { return id.Leaf().Subject.CommonName }

// Leaf is the current certificate.
func (id *Identity) Leaf() *x509.Certificate {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.cert.Leaf
}

// PEM returns the current certificate and key and the CA, in PEM (for
// what is not Go: QEMU's migrations are carried over TLS with them).
func (id *Identity) PEM() (cert, key, ca []byte, err error) {
	c := id.current()
	k, ok := c.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, nil, fmt.Errorf("the node key is a %T, not ECDSA", c.PrivateKey)
	}
	if key, err = pki.KeyPEM(k); err != nil {
		return nil, nil, nil, err
	}
	return pki.CertPEM(c.Certificate[0]), key, pki.CertPEM(id.ca.Raw), nil
}

func (id *Identity) current() *tls.Certificate {
	id.mu.Lock()
	defer id.mu.Unlock()
	c := id.cert
	return &c
}

// set installs a new certificate (and key) and stores them.
func (id *Identity) set(keyPEM, certPEM []byte) error {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return err
	}
	if id.dir != "" {
		if err := pki.WriteFileAtomic(filepath.Join(id.dir, fileKey), keyPEM, 0o600); err != nil {
			return err
		}
		if err := pki.WriteFileAtomic(filepath.Join(id.dir, fileCert), certPEM, 0o644); err != nil {
			return err
		}
	}
	id.mu.Lock()
	id.cert = cert
	id.mu.Unlock()
	return nil
}

// TLSConfig presents the current certificate and accepts only a
// controller certificate from the node's CA.
func (id *Identity) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Verified below: chain to the node's CA with server auth; no host
		// name check (the CA gives server certificates to the controller
		// only).
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return pki.VerifyServer(raw, id.ca)
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return id.current(), nil },
	}
}

// ErrNameInUse is the controller's refusal of a join under the name of
// another node of the cloud.
var ErrNameInUse = errors.New("node name in use")

// Join trades a join token for a certificate at the controller at base
// ("https://host:port"), after checking that the controller's CA matches the
// token's pin, and stores the identity in dir (created 0700). A refused
// token is an error wrapping pki.ErrTokenRejected, a wrong CA one wrapping
// pki.ErrPinMismatch, a name another node has one wrapping ErrNameInUse.
// When dir holds a certificate for name already (expired: the node was
// away), Join presents it, so that the controller knows the node joins
// again under its own name.
func Join(ctx context.Context, base, token, name, dir string) (*Identity, error) {
	tok, err := pki.ParseToken(token)
	if err != nil {
		return nil, err
	}
	if !pki.ValidNodeName(name) {
		return nil, fmt.Errorf("node name %q: names are 1-63 letters, digits, '.' and '-'", name)
	}
	var pinned *x509.Certificate
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // verified below against the pin
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			ca, err := pki.FindPinned(raw, tok.Pin)
			if err != nil {
				return err
			}
			if err := pki.VerifyServer(raw, ca); err != nil {
				return err
			}
			pinned = ca
			return nil
		},
	}
	if old, err := LoadIdentity(dir); err == nil && old.Name() == name {
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return old.current(), nil }
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 30 * time.Second}
	defer hc.CloseIdleConnections()
	keyPEM, csrPEM, err := pki.NewKeyAndCSR(name)
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(JoinRequest{Token: token, CSR: string(csrPEM)})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+PathJoin, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		if errors.Is(err, pki.ErrPinMismatch) {
			return nil, fmt.Errorf("join %s: %w", base, pinErr(err))
		}
		return nil, fmt.Errorf("join %s: %w", base, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden:
		return nil, fmt.Errorf("%w: %s", pki.ErrTokenRejected, errorText(resp))
	case http.StatusConflict:
		return nil, fmt.Errorf("%w: %s", ErrNameInUse, errorText(resp))
	}
	if err := checkStatus(resp); err != nil {
		return nil, fmt.Errorf("join %s: %w", base, err)
	}
	var out CertReply
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return nil, fmt.Errorf("join %s: bad reply: %w", base, err)
	}
	ca, err := pki.ParseCertPEM([]byte(out.CA))
	if err != nil || !ca.Equal(pinned) {
		return nil, fmt.Errorf("join %s: the controller answered with another CA than it presented", base)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	id := &Identity{dir: dir, ca: ca}
	if err := id.set(keyPEM, []byte(out.Certificate)); err != nil {
		return nil, fmt.Errorf("join %s: %w", base, err)
	}
	if err := pki.WriteFileAtomic(filepath.Join(dir, fileCA), []byte(out.CA), 0o644); err != nil {
		return nil, err
	}
	return id, nil
}

// pinErr digs the pin mismatch out of the TLS and URL errors around it.
func pinErr(err error) error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if errors.Unwrap(e) == pki.ErrPinMismatch {
			return e
		}
	}
	return err
}

func errorText(resp *http.Response) string {
	var e struct {
		Error string `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if json.Unmarshal(b, &e) != nil || e.Error == "" {
		return string(b)
	}
	return e.Error
}
