package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
)

const (
	tokenPrefix    = "clipper-join"
	tokenIDLen     = 12 // hex characters
	tokenSecretLen = 32
	pinLen         = 64
)

// Token is a join token: clipper-join.<id>.<secret>.<pin>. The ID names the
// token in the controller's list, the secret proves it, the pin names the
// CA the node must find in the controller's certificate chain.
type Token struct {
	ID, Secret, Pin string
}

func (t Token) String() string {
	return strings.Join([]string{tokenPrefix, t.ID, t.Secret, t.Pin}, ".")
}

// ParseToken parses a join token as `clipper token create` prints it.
func ParseToken(s string) (Token, error) {
	parts := strings.Split(s, ".")
	if len(parts) != 4 || parts[0] != tokenPrefix {
		return Token{}, errors.New("a join token reads clipper-join.<id>.<secret>.<ca-pin>")
	}
	t := Token{ID: parts[1], Secret: parts[2], Pin: parts[3]}
	for _, f := range []struct {
		what, v string
		n       int
	}{{"id", t.ID, tokenIDLen}, {"secret", t.Secret, tokenSecretLen}, {"CA pin", t.Pin, pinLen}} {
		if len(f.v) != f.n || !lowerHex(f.v) {
			return Token{}, fmt.Errorf("the join token's %s must be %d lower-case hex digits", f.what, f.n)
		}
	}
	return t, nil
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// VerifyServer checks the chain a controller presented: the leaf must be a
// server-auth certificate issued by ca. Host names are not checked (see the
// package documentation).
func VerifyServer(rawCerts [][]byte, ca *x509.Certificate) error {
	if len(rawCerts) == 0 {
		return errors.New("the controller sent no certificate")
	}
	leaf, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	inter := x509.NewCertPool()
	for _, raw := range rawCerts[1:] {
		if c, err := x509.ParseCertificate(raw); err == nil && !c.Equal(ca) {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("the controller's certificate is not from the expected CA: %w", err)
	}
	return nil
}

// FindPinned returns the CA certificate in a presented chain whose public
// key matches pin, or ErrPinMismatch.
func FindPinned(rawCerts [][]byte, pin string) (*x509.Certificate, error) {
	var seen []string
	for _, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			continue
		}
		if !c.IsCA {
			continue
		}
		p := PinOf(c)
		if p == pin {
			return c, nil
		}
		seen = append(seen, p)
	}
	if len(seen) == 0 {
		return nil, fmt.Errorf("%w: the controller sent no CA certificate", ErrPinMismatch)
	}
	return nil, fmt.Errorf("%w (the controller's CA has pin %s)", ErrPinMismatch, strings.Join(seen, ", "))
}
