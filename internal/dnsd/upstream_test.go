package dnsd

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestResolvConf(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name, text string
		want       []string
	}{
		{"servers", "search example\nnameserver 10.0.0.2\nnameserver 2001:db8::1\noptions ndots:2\n",
			[]string{"10.0.0.2:53", "[2001:db8::1]:53"}},
		{"a loopback stub is kept", "nameserver 127.0.0.53\n", []string{"127.0.0.53:53"}},
		{"none: the C library's default", "search example\n", []string{libcDefault}},
		{"junk", "nameserver not-an-address\n", []string{libcDefault}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, c.name)
			if err := os.WriteFile(p, []byte(c.text), 0o644); err != nil {
				t.Fatal(err)
			}
			if got := newUpstreams(nil, p).servers(); !slices.Equal(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
	if got := newUpstreams(nil, filepath.Join(dir, "missing")).servers(); !slices.Equal(got, []string{libcDefault}) {
		t.Errorf("missing file: %v", got)
	}
}

func TestResolvConfReread(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(p, []byte("nameserver 10.0.0.2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	u := newUpstreams(nil, p)
	if got := u.servers(); !slices.Equal(got, []string{"10.0.0.2:53"}) {
		t.Fatalf("got %v", got)
	}
	if err := os.WriteFile(p, []byte("nameserver 10.0.0.3\nnameserver 10.0.0.4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A later modification time, whatever the file system's resolution.
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(p, later, later); err != nil {
		t.Fatal(err)
	}
	if got := u.servers(); !slices.Equal(got, []string{"10.0.0.3:53", "10.0.0.4:53"}) {
		t.Errorf("after the change: %v", got)
	}
}

func TestFixedUpstreams(t *testing.T) {
	u := newUpstreams([]string{"10.0.0.9", "127.0.0.1:5353", "[::1]:53", "bad"}, "/nonexistent")
	if got := u.servers(); !slices.Equal(got, []string{"10.0.0.9:53", "127.0.0.1:5353", "[::1]:53"}) {
		t.Errorf("got %v", got)
	}
	if got := newUpstreams([]string{}, "/etc/resolv.conf").servers(); len(got) != 0 {
		t.Errorf("an empty fixed list reads resolv.conf: %v", got)
	}
}
