package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// state is what the CA remembers besides its key: join tokens (hashed),
// the certificates it issued (to revoke by node name) and revoked serials.
// Entries leave once they expire.
type state struct {
	Tokens  map[string]storedToken `json:"tokens"`
	Issued  []issued               `json:"issued"`
	Revoked map[string]time.Time   `json:"revoked"` // serial (hex) -> the certificate's NotAfter
}

type storedToken struct {
	SHA256  string    `json:"sha256"` // of the secret
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires,omitzero"` // zero: never
}

type issued struct {
	Serial   string    `json:"serial"`
	Name     string    `json:"name"`
	NotAfter time.Time `json:"not_after"`
}

func (ca *CA) statePath() string { return filepath.Join(ca.dir, "state.json") }

func (ca *CA) load() error {
	b, err := os.ReadFile(ca.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := json.Unmarshal(b, &ca.st); err != nil {
		return fmt.Errorf("pki: %s: %w", ca.statePath(), err)
	}
	return nil
}

// saveLocked prunes expired entries and writes the state; ca.mu is held.
func (ca *CA) saveLocked() error {
	now := ca.Now()
	for id, t := range ca.st.Tokens {
		if !t.Expires.IsZero() && now.After(t.Expires) {
			delete(ca.st.Tokens, id)
		}
	}
	for s, na := range ca.st.Revoked {
		if now.After(na) {
			delete(ca.st.Revoked, s)
		}
	}
	kept := ca.st.Issued[:0]
	for _, is := range ca.st.Issued {
		if !now.After(is.NotAfter) {
			kept = append(kept, is)
		}
	}
	ca.st.Issued = kept
	b, err := json.MarshalIndent(ca.st, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(ca.statePath(), b, 0o600)
}

// CreateToken makes a join token valid for ttl (0: until deleted). Tokens
// may be used by any number of nodes until they expire.
func (ca *CA) CreateToken(ttl time.Duration) (Token, time.Time, error) {
	t := Token{ID: randHex(tokenIDLen / 2), Secret: randHex(tokenSecretLen / 2), Pin: ca.Pin()}
	st := storedToken{SHA256: hashSecret(t.Secret), Created: ca.Now()}
	if ttl > 0 {
		st.Expires = st.Created.Add(ttl)
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if ca.st.Tokens == nil {
		ca.st.Tokens = map[string]storedToken{}
	}
	ca.st.Tokens[t.ID] = st
	return t, st.Expires, ca.saveLocked()
}

// CheckToken accepts a join token this CA issued that has not expired.
// Every refusal wraps ErrTokenRejected.
func (ca *CA) CheckToken(t Token) error {
	ca.mu.Lock()
	st, ok := ca.st.Tokens[t.ID]
	ca.mu.Unlock()
	// Compare anyway, so an unknown ID takes as long as a wrong secret.
	if subtle.ConstantTimeCompare([]byte(hashSecret(t.Secret)), []byte(st.SHA256)) != 1 || !ok {
		return fmt.Errorf("%w: unknown token or wrong secret", ErrTokenRejected)
	}
	if !st.Expires.IsZero() && ca.Now().After(st.Expires) {
		return fmt.Errorf("%w: the token expired at %s", ErrTokenRejected, st.Expires.UTC().Format(time.RFC3339))
	}
	if t.Pin != ca.Pin() {
		return fmt.Errorf("%w: the token pins another CA", ErrTokenRejected)
	}
	return nil
}

// ErrUnknownToken is the error of DeleteToken for an ID it does not hold.
var ErrUnknownToken = errors.New("no such join token")

// TokenInfo describes a join token without its secret.
type TokenInfo struct {
	ID      string
	Created time.Time
	Expires time.Time // zero: never
}

// Tokens lists the join tokens that have not expired, oldest first.
func (ca *CA) Tokens() []TokenInfo {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	now := ca.Now()
	out := make([]TokenInfo, 0, len(ca.st.Tokens))
	for id, t := range ca.st.Tokens {
		if t.Expires.IsZero() || !now.After(t.Expires) {
			out = append(out, TokenInfo{ID: id, Created: t.Created, Expires: t.Expires})
		}
	}
	slices.SortFunc(out, func(a, b TokenInfo) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// DeleteToken revokes a join token: no node joins with it any more (nodes
// that joined with it keep their certificates). The error wraps
// ErrUnknownToken when there is no such (unexpired) token.
func (ca *CA) DeleteToken(id string) error {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	t, ok := ca.st.Tokens[id]
	if !ok || (!t.Expires.IsZero() && ca.Now().After(t.Expires)) {
		return fmt.Errorf("%w: %q", ErrUnknownToken, id)
	}
	delete(ca.st.Tokens, id)
	return ca.saveLocked()
}

// EnsureTokenFile keeps a join token that never expires in path (0600): the
// one there if this CA still accepts it, else a new one.
func (ca *CA) EnsureTokenFile(path string) (Token, error) {
	if b, err := os.ReadFile(path); err == nil {
		if t, err := ParseToken(strings.TrimSpace(string(b))); err == nil && ca.CheckToken(t) == nil {
			return t, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return Token{}, err
	}
	t, _, err := ca.CreateToken(0)
	if err != nil {
		return Token{}, err
	}
	return t, WriteFileAtomic(path, []byte(t.String()+"\n"), 0o600)
}

func hashSecret(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// NewKeyAndCSR makes a node key and a certificate request for name; both
// PEM.
func NewKeyAndCSR(name string) (keyPEM, csrPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		return nil, nil, err
	}
	if keyPEM, err = KeyPEM(key); err != nil {
		return nil, nil, err
	}
	return keyPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// KeyPEM encodes a private key as PKCS#8 PEM.
func KeyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKeyPEM decodes a PKCS#8 PEM ECDSA key.
func ParseKeyPEM(b []byte) (*ecdsa.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, errors.New("no PRIVATE KEY PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("not an ECDSA key")
	}
	return ek, nil
}

// CertPEM encodes a DER certificate as PEM.
func CertPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// ParseCertPEM decodes the first certificate of a PEM file.
func ParseCertPEM(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("no CERTIFICATE PEM block")
	}
	return x509.ParseCertificate(blk.Bytes)
}

// WriteFileAtomic writes a file through a temporary file and a rename, with
// mode applied even over an existing file.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
