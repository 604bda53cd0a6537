// Package pki is the controller's small certificate authority and the join
// tokens nodes present once to get a certificate from it.
//
// The CA (ECDSA P-256, ten years) lives in DATA-DIR/pki: ca.key (0600) and
// ca.crt, created at first start and kept across restarts. It signs a server
// certificate for the node listener at every start and a client certificate
// per node (CN = node name, 30 days by default). Nodes renew their
// certificate once two thirds of its lifetime have passed. Revoked serials,
// issued serials and join tokens (hashed) are kept in DATA-DIR/pki/state.json
// (0600).
//
// A join token reads clipper-join.<id>.<secret>.<pin>, where pin is the
// lower-case hex SHA-256 of the CA certificate's DER SubjectPublicKeyInfo
// (kubeadm's discovery hash). A node trusts the controller on first contact
// only if the CA in the server's chain has that public key.
//
// Nodes verify the controller's certificate by chain and extended key usage
// (server auth), not by host name: the CA issues server-auth certificates to
// the controller only, so a node may dial the controller by any address.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"
)

// DefaultNodeCertTTL is the lifetime of a node certificate.
const DefaultNodeCertTTL = 30 * 24 * time.Hour

// Errors a node or the controller may act on.
var (
	ErrRevoked       = errors.New("certificate revoked")
	ErrUntrusted     = errors.New("certificate not issued by this controller's CA")
	ErrExpired       = errors.New("certificate expired or not yet valid")
	ErrTokenRejected = errors.New("join token rejected")
	ErrPinMismatch   = errors.New("the controller's CA does not match the pin in the join token")
)

var nodeNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9.\-]{0,62}$`)

// ValidNodeName reports whether name can be a node's name (and CN).
func ValidNodeName(name string) bool { return nodeNameRE.MatchString(name) }

// CA is the controller's certificate authority.
type CA struct {
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// Now is the clock (tests move it).
	Now func() time.Time

	mu sync.Mutex
	st state
}

// OpenCA loads the CA in dir, creating it (and dir, 0700) at first use.
func OpenCA(dir string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	ca := &CA{dir: dir, Now: time.Now}
	keyPath, certPath := filepath.Join(dir, "ca.key"), filepath.Join(dir, "ca.crt")
	key, errK := os.ReadFile(keyPath)
	cert, errC := os.ReadFile(certPath)
	switch {
	case errK == nil && errC == nil:
		k, err := ParseKeyPEM(key)
		if err != nil {
			return nil, fmt.Errorf("pki: %s: %w", keyPath, err)
		}
		c, err := ParseCertPEM(cert)
		if err != nil {
			return nil, fmt.Errorf("pki: %s: %w", certPath, err)
		}
		if !k.PublicKey.Equal(c.PublicKey) {
			return nil, fmt.Errorf("pki: %s does not match %s", keyPath, certPath)
		}
		ca.key, ca.cert = k, c
	case errors.Is(errK, os.ErrNotExist) && errors.Is(errC, os.ErrNotExist):
		if err := ca.create(keyPath, certPath); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("pki: need both %s and %s: %v %v", keyPath, certPath, errK, errC)
	}
	if err := ca.load(); err != nil {
		return nil, err
	}
	return ca, nil
}

func (ca *CA) create(keyPath, certPath string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{CommonName: "Clipper CA", Organization: []string{"Clipper"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	keyPEM, err := KeyPEM(key)
	if err != nil {
		return err
	}
	if err := WriteFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	if err := WriteFileAtomic(certPath, CertPEM(der), 0o644); err != nil {
		return err
	}
	ca.key, ca.cert = key, cert
	return nil
}

// Cert is the CA certificate.
func (ca *CA) Cert() *x509.Certificate { return ca.cert }

// Pin is the CA's pin as join tokens carry it.
func (ca *CA) Pin() string { return PinOf(ca.cert) }

// PinOf is the lower-case hex SHA-256 of a certificate's SubjectPublicKeyInfo.
func PinOf(c *x509.Certificate) string {
	h := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(h[:])
}

// ServerCert issues the node listener's certificate (one year) for the
// given host names and addresses; the chain includes the CA so that a
// joining node can check the pin.
func (ca *CA) ServerCert(hosts []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	now := ca.Now()
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(),
		Subject:      pkix.Name{CommonName: "clipper-controller", Organization: []string{"Clipper"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	seen := map[string]bool{}
	for _, h := range append([]string{"localhost", "127.0.0.1", "::1"}, hosts...) {
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			if !ip.IsUnspecified() {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// CSRName returns the node name (CN) a CSR (PEM or DER) asks for, after
// checking its signature.
func CSRName(csr []byte) (string, error) {
	req, err := parseCSR(csr)
	if err != nil {
		return "", err
	}
	if !ValidNodeName(req.Subject.CommonName) {
		return "", fmt.Errorf("the request's common name %q is not a valid node name (1-63 letters, digits, '.' and '-')", req.Subject.CommonName)
	}
	return req.Subject.CommonName, nil
}

func parseCSR(csr []byte) (*x509.CertificateRequest, error) {
	if b, _ := pem.Decode(csr); b != nil {
		if b.Type != "CERTIFICATE REQUEST" {
			return nil, fmt.Errorf("expected a CERTIFICATE REQUEST, got %s", b.Type)
		}
		csr = b.Bytes
	}
	req, err := x509.ParseCertificateRequest(csr)
	if err != nil {
		return nil, fmt.Errorf("bad certificate request: %w", err)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("bad certificate request signature: %w", err)
	}
	return req, nil
}

// SignNode signs a node's CSR (PEM or DER) for ttl (DefaultNodeCertTTL when
// 0). The CSR's CN is the node name. If name is not empty the CN must equal
// it (renewal keeps the name of the certificate being renewed).
func (ca *CA) SignNode(csr []byte, name string, ttl time.Duration) (*x509.Certificate, error) {
	req, err := parseCSR(csr)
	if err != nil {
		return nil, err
	}
	cn := req.Subject.CommonName
	if !ValidNodeName(cn) {
		return nil, fmt.Errorf("the request's common name %q is not a valid node name (1-63 letters, digits, '.' and '-')", cn)
	}
	if name != "" && cn != name {
		return nil, fmt.Errorf("the request names node %q, the certificate is for %q", cn, name)
	}
	return ca.issue(cn, req.PublicKey, ttl)
}

// IssueNode creates a key and a certificate for a node in this process
// (clipper up).
func (ca *CA) IssueNode(name string, ttl time.Duration) (tls.Certificate, error) {
	if !ValidNodeName(name) {
		return tls.Certificate{}, fmt.Errorf("%q is not a valid node name", name)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, err := ca.issue(name, &key.PublicKey, ttl)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

func (ca *CA) issue(name string, pub crypto.PublicKey, ttl time.Duration) (*x509.Certificate, error) {
	if ttl <= 0 {
		ttl = DefaultNodeCertTTL
	}
	now := ca.Now()
	// Allow for clock skew, but little of a short lifetime.
	skew := min(5*time.Minute, ttl/20)
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(),
		Subject:      pkix.Name{CommonName: name, Organization: []string{"clipper:nodes"}},
		NotBefore:    now.Add(-skew),
		NotAfter:     now.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	ca.st.Issued = append(ca.st.Issued, issued{Serial: serialHex(cert.SerialNumber), Name: name, NotAfter: cert.NotAfter})
	if err := ca.saveLocked(); err != nil {
		return nil, err
	}
	return cert, nil
}

// VerifyNode checks a node's client certificate: issued by this CA for
// client auth, valid now, not revoked. It returns the node name.
func (ca *CA) VerifyNode(c *x509.Certificate) (string, error) {
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	now := ca.Now()
	if now.Before(c.NotBefore) || now.After(c.NotAfter) {
		return "", fmt.Errorf("%w (valid %s to %s)", ErrExpired, c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return "", fmt.Errorf("%w: %v", ErrUntrusted, err)
	}
	if ca.Revoked(c.SerialNumber) {
		return "", ErrRevoked
	}
	if !ValidNodeName(c.Subject.CommonName) {
		return "", fmt.Errorf("%w: no node name", ErrUntrusted)
	}
	return c.Subject.CommonName, nil
}

// VerifyNodeEver checks a node certificate as VerifyNode does, but at a
// time within its own validity: it proves that the holder was issued a
// certificate by this CA for that name, and that it was never revoked,
// even if it has expired since. A node whose certificate expired presents
// it to join again under its name.
func (ca *CA) VerifyNodeEver(c *x509.Certificate) (string, error) {
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: c.NotBefore.Add(time.Second),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return "", fmt.Errorf("%w: %v", ErrUntrusted, err)
	}
	if ca.Revoked(c.SerialNumber) {
		return "", ErrRevoked
	}
	if !ValidNodeName(c.Subject.CommonName) {
		return "", fmt.Errorf("%w: no node name", ErrUntrusted)
	}
	return c.Subject.CommonName, nil
}

// HasLiveCert reports whether a node name holds a certificate that is
// neither expired nor revoked.
func (ca *CA) HasLiveCert(name string) bool {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	now := ca.Now()
	for _, is := range ca.st.Issued {
		if _, revoked := ca.st.Revoked[is.Serial]; is.Name == name && !revoked && !now.After(is.NotAfter) {
			return true
		}
	}
	return false
}

// Revoked reports whether a serial is revoked.
func (ca *CA) Revoked(serial *big.Int) bool {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	_, ok := ca.st.Revoked[serialHex(serial)]
	return ok
}

// RevokeNode revokes every unexpired certificate issued to a node and
// returns how many.
func (ca *CA) RevokeNode(name string) (int, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	n := 0
	for _, is := range ca.st.Issued {
		if is.Name != name {
			continue
		}
		if _, ok := ca.st.Revoked[is.Serial]; !ok {
			if ca.st.Revoked == nil {
				ca.st.Revoked = map[string]time.Time{}
			}
			ca.st.Revoked[is.Serial] = is.NotAfter
			n++
		}
	}
	return n, ca.saveLocked()
}

// RevokeSerial revokes one certificate.
func (ca *CA) RevokeSerial(c *x509.Certificate) error {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if ca.st.Revoked == nil {
		ca.st.Revoked = map[string]time.Time{}
	}
	ca.st.Revoked[serialHex(c.SerialNumber)] = c.NotAfter
	return ca.saveLocked()
}

// RenewAt is when a certificate should be renewed: once two thirds of its
// lifetime have passed.
func RenewAt(c *x509.Certificate) time.Time {
	return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) * 2 / 3)
}

func newSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return n.Add(n, big.NewInt(1))
}

func serialHex(n *big.Int) string { return n.Text(16) }
