package pki

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func openCA(t *testing.T) (*CA, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	ca, err := OpenCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ca, dir
}

func signCSR(t *testing.T, ca *CA, name string, ttl time.Duration) *x509.Certificate {
	t.Helper()
	_, csr, err := NewKeyAndCSR(name)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.SignNode(csr, "", ttl)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCAPersistsAcrossRestarts(t *testing.T) {
	ca, dir := openCA(t)
	fi, err := os.Stat(filepath.Join(dir, "ca.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key: %v %v", fi.Mode(), err)
	}
	c := signCSR(t, ca, "node1", 0)
	again, err := OpenCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.Pin() != ca.Pin() {
		t.Fatal("the CA changed across a restart")
	}
	if name, err := again.VerifyNode(c); err != nil || name != "node1" {
		t.Fatalf("a certificate from before the restart: %q %v", name, err)
	}
}

func TestSignAndVerify(t *testing.T) {
	ca, _ := openCA(t)
	c := signCSR(t, ca, "node-a.example", time.Hour)
	if c.Subject.CommonName != "node-a.example" || c.NotAfter.Sub(ca.Now()) > time.Hour {
		t.Fatalf("cert %v until %v", c.Subject, c.NotAfter)
	}
	if name, err := ca.VerifyNode(c); err != nil || name != "node-a.example" {
		t.Fatalf("VerifyNode: %q %v", name, err)
	}
	// Another CA's certificate is refused.
	other, _ := openCA(t)
	if _, err := ca.VerifyNode(signCSR(t, other, "node1", 0)); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("foreign cert: %v", err)
	}
	// A server certificate is not a node certificate.
	srv, err := ca.ServerCert([]string{"10.0.0.1", "ctl.example"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.VerifyNode(srv.Leaf); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("server cert as node cert: %v", err)
	}
	if err := VerifyServer(srv.Certificate, ca.Cert()); err != nil {
		t.Fatal(err)
	}
	// A node certificate cannot serve.
	if err := VerifyServer([][]byte{c.Raw}, ca.Cert()); err == nil {
		t.Fatal("a node certificate passed as a server certificate")
	}
	// Bad names and renewals under another name are refused.
	_, csr, _ := NewKeyAndCSR("bad name")
	if _, err := ca.SignNode(csr, "", 0); err == nil {
		t.Fatal("signed an invalid name")
	}
	_, csr, _ = NewKeyAndCSR("node2")
	if _, err := ca.SignNode(csr, "node1", 0); err == nil {
		t.Fatal("renewal changed the name")
	}
}

func TestPin(t *testing.T) {
	ca, _ := openCA(t)
	srv, err := ca.ServerCert(nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := FindPinned(srv.Certificate, ca.Pin())
	if err != nil || !got.Equal(ca.Cert()) {
		t.Fatalf("FindPinned: %v", err)
	}
	other, _ := openCA(t)
	if _, err := FindPinned(srv.Certificate, other.Pin()); !errors.Is(err, ErrPinMismatch) {
		t.Fatalf("wrong pin: %v", err)
	}
	if _, err := FindPinned(srv.Certificate[:1], ca.Pin()); !errors.Is(err, ErrPinMismatch) {
		t.Fatalf("no CA in chain: %v", err)
	}
}

func TestExpiryAndRenewal(t *testing.T) {
	ca, _ := openCA(t)
	now := time.Now()
	ca.Now = func() time.Time { return now }
	c := signCSR(t, ca, "node1", 30*time.Hour)
	at := RenewAt(c)
	if at.Before(now.Add(19*time.Hour)) || at.After(now.Add(21*time.Hour)) {
		t.Fatalf("renew at %v, issued %v", at, now)
	}
	now = now.Add(31 * time.Hour)
	if _, err := ca.VerifyNode(c); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired cert: %v", err)
	}
	// A renewal keeps the name and gets a new serial.
	_, csr, _ := NewKeyAndCSR("node1")
	r, err := ca.SignNode(csr, "node1", 30*time.Hour)
	if err != nil || r.SerialNumber.Cmp(c.SerialNumber) == 0 {
		t.Fatalf("renewal: %v", err)
	}
	if _, err := ca.VerifyNode(r); err != nil {
		t.Fatal(err)
	}
}

func TestRevoke(t *testing.T) {
	ca, dir := openCA(t)
	a1 := signCSR(t, ca, "node1", 0)
	a2 := signCSR(t, ca, "node1", 0)
	b := signCSR(t, ca, "node2", 0)
	n, err := ca.RevokeNode("node1")
	if err != nil || n != 2 {
		t.Fatalf("RevokeNode: %d %v", n, err)
	}
	for _, c := range []*x509.Certificate{a1, a2} {
		if _, err := ca.VerifyNode(c); !errors.Is(err, ErrRevoked) || err.Error() != "certificate revoked" {
			t.Fatalf("revoked cert: %v", err)
		}
	}
	if _, err := ca.VerifyNode(b); err != nil {
		t.Fatalf("other node: %v", err)
	}
	// Revocation survives a restart; a new certificate for the name is good.
	again, err := OpenCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := again.VerifyNode(a1); !errors.Is(err, ErrRevoked) {
		t.Fatalf("after restart: %v", err)
	}
	if _, err := again.VerifyNode(signCSR(t, again, "node1", 0)); err != nil {
		t.Fatalf("rejoined node: %v", err)
	}
	if err := again.RevokeSerial(b); err != nil {
		t.Fatal(err)
	}
	if _, err := again.VerifyNode(b); !errors.Is(err, ErrRevoked) {
		t.Fatalf("RevokeSerial: %v", err)
	}
}

func TestTokens(t *testing.T) {
	ca, dir := openCA(t)
	now := time.Now()
	ca.Now = func() time.Time { return now }
	tok, exp, err := ca.CreateToken(time.Hour)
	if err != nil || !exp.Equal(now.Add(time.Hour)) {
		t.Fatalf("CreateToken: %v %v", exp, err)
	}
	parsed, err := ParseToken(tok.String())
	if err != nil || parsed != tok || parsed.Pin != ca.Pin() {
		t.Fatalf("round trip: %+v %v", parsed, err)
	}
	if err := ca.CheckToken(tok); err != nil {
		t.Fatal(err)
	}
	if err := ca.CheckToken(tok); err != nil {
		t.Fatalf("tokens are reusable until they expire: %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "state.json"))
	if strings.Contains(string(b), tok.Secret) {
		t.Fatal("the secret is stored in clear")
	}
	bad := tok
	bad.Secret = strings.Repeat("0", tokenSecretLen)
	if err := ca.CheckToken(bad); !errors.Is(err, ErrTokenRejected) {
		t.Fatalf("wrong secret: %v", err)
	}
	bad = tok
	bad.ID = strings.Repeat("0", tokenIDLen)
	if err := ca.CheckToken(bad); !errors.Is(err, ErrTokenRejected) {
		t.Fatalf("unknown id: %v", err)
	}
	now = now.Add(2 * time.Hour)
	if err := ca.CheckToken(tok); !errors.Is(err, ErrTokenRejected) {
		t.Fatalf("expired token: %v", err)
	}
	// The token file keeps one token across restarts.
	path := filepath.Join(t.TempDir(), "join-token")
	t1, err := ca.EnsureTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("join-token mode %v", fi.Mode())
	}
	now = now.Add(1000 * time.Hour)
	t2, err := ca.EnsureTokenFile(path)
	if err != nil || t2 != t1 {
		t.Fatalf("token file changed: %v", err)
	}
}

func TestParseToken(t *testing.T) {
	good := "clipper-join.0123456789ab." + strings.Repeat("a", 32) + "." + strings.Repeat("f", 64)
	if _, err := ParseToken(good); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"", "clipper-join", good + ".x", strings.Replace(good, "clipper-join", "kube-join", 1),
		strings.Replace(good, "0123456789ab", "0123456789AB", 1), strings.Replace(good, "0123456789ab", "0123", 1),
		good[:len(good)-1], good[:len(good)-1] + "g"} {
		if _, err := ParseToken(s); err == nil {
			t.Errorf("ParseToken(%q) accepted", s)
		}
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add("clipper-join.0123456789ab." + strings.Repeat("a", 32) + "." + strings.Repeat("f", 64))
	f.Add("clipper-join...")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			return
		}
		if tok.String() != s {
			t.Fatalf("%q parsed, prints as %q", s, tok.String())
		}
		again, err := ParseToken(tok.String())
		if err != nil || again != tok {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// TestNodeIdentityAcrossExpiry: a name holds a live certificate until it
// expires or is revoked; an expired certificate still proves who it was
// issued to (VerifyNodeEver), a revoked or foreign one does not.
func TestNodeIdentityAcrossExpiry(t *testing.T) {
	ca, _ := openCA(t)
	now := time.Now()
	ca.Now = func() time.Time { return now }
	if ca.HasLiveCert("node1") {
		t.Fatal("a name nobody joined under has a certificate")
	}
	c := signCSR(t, ca, "node1", time.Hour)
	if !ca.HasLiveCert("node1") || ca.HasLiveCert("node2") {
		t.Fatal("HasLiveCert after issuing node1's certificate")
	}
	now = now.Add(2 * time.Hour)
	if ca.HasLiveCert("node1") {
		t.Fatal("an expired certificate is live")
	}
	if _, err := ca.VerifyNode(c); !errors.Is(err, ErrExpired) {
		t.Fatalf("VerifyNode of an expired certificate: %v", err)
	}
	if name, err := ca.VerifyNodeEver(c); err != nil || name != "node1" {
		t.Fatalf("VerifyNodeEver of an expired certificate: %q %v", name, err)
	}
	other, _ := openCA(t)
	if _, err := ca.VerifyNodeEver(signCSR(t, other, "node1", time.Hour)); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("foreign certificate: %v", err)
	}
	d := signCSR(t, ca, "node3", time.Hour)
	if _, err := ca.RevokeNode("node3"); err != nil {
		t.Fatal(err)
	}
	if ca.HasLiveCert("node3") {
		t.Fatal("a revoked certificate is live")
	}
	if _, err := ca.VerifyNodeEver(d); !errors.Is(err, ErrRevoked) {
		t.Fatalf("VerifyNodeEver of a revoked certificate: %v", err)
	}
	if name, err := CSRName(mustCSR(t, "node7")); err != nil || name != "node7" {
		t.Fatalf("CSRName: %q %v", name, err)
	}
	if _, err := CSRName([]byte("not a csr")); err == nil {
		t.Fatal("CSRName accepted garbage")
	}
}

func mustCSR(t *testing.T, name string) []byte {
	t.Helper()
	_, csr, err := NewKeyAndCSR(name)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// TestListAndDeleteTokens: tokens are listed without their secret, oldest
// first, expired ones left out; a deleted token joins nobody, and deleting
// it twice says there is no such token.
func TestListAndDeleteTokens(t *testing.T) {
	ca, dir := openCA(t)
	now := time.Now()
	ca.Now = func() time.Time { return now }
	forever, _, err := ca.CreateToken(0)
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Second)
	short, exp, err := ca.CreateToken(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ls := ca.Tokens()
	if len(ls) != 2 || ls[0].ID != forever.ID || !ls[0].Expires.IsZero() || ls[1].ID != short.ID || !ls[1].Expires.Equal(exp) {
		t.Fatalf("Tokens: %+v", ls)
	}
	if err := ca.DeleteToken(forever.ID); err != nil {
		t.Fatal(err)
	}
	if err := ca.CheckToken(forever); !errors.Is(err, ErrTokenRejected) {
		t.Fatalf("a deleted token: %v", err)
	}
	if err := ca.DeleteToken(forever.ID); !errors.Is(err, ErrUnknownToken) {
		t.Fatalf("deleting it again: %v", err)
	}
	// Deletion is kept across a restart.
	again, err := OpenCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	again.Now = ca.Now
	if err := again.CheckToken(forever); !errors.Is(err, ErrTokenRejected) {
		t.Fatalf("a deleted token after a restart: %v", err)
	}
	now = now.Add(2 * time.Minute)
	if ls := ca.Tokens(); len(ls) != 0 {
		t.Fatalf("expired tokens listed: %+v", ls)
	}
	if err := ca.DeleteToken(short.ID); !errors.Is(err, ErrUnknownToken) {
		t.Fatalf("deleting an expired token: %v", err)
	}
}

// FuzzCSRName feeds the join request's CSR parser (what a joining node
// sends) arbitrary bytes: it must answer a valid node name or an error.
func FuzzCSRName(f *testing.F) {
	_, csr, err := NewKeyAndCSR("node1")
	if err != nil {
		f.Fatal(err)
	}
	_, bad, _ := NewKeyAndCSR("bad name")
	f.Add(csr)
	f.Add(bad)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte{0x30, 0x82, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		name, err := CSRName(b)
		if err == nil && !ValidNodeName(name) {
			t.Fatalf("CSRName accepted %q", name)
		}
	})
}
