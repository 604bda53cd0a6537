package service

import (
	"testing"
)

func FuzzParseForward(f *testing.F) {
	for _, s := range [][3]string{
		{"tcp", "198.51.100.7:8080", "172.31.0.5:80"},
		{"", "198.51.100.7:53", "10.0.0.1:53"},
		{"UDP", "1.2.3.4:1", "5.6.7.8:65535"},
		{"sctp", "1.2.3.4:1", "5.6.7.8:2"},
		{"tcp", "[::1]:80", "1.2.3.4:80"},
		{"tcp", "1.2.3.4:0", "1.2.3.4:99999"},
		{"tcp", "0.0.0.0:80", " 1.2.3.4:80 "},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, proto, listen, to string) {
		p, l, d, err := ParseForward(proto, listen, to)
		if err != nil {
			return
		}
		if p != "tcp" && p != "udp" {
			t.Fatalf("protocol %q accepted", p)
		}
		for _, ap := range []struct{ a, b any }{{l.Addr().Is4(), l.Port() != 0}, {d.Addr().Is4(), d.Port() != 0}} {
			if ap.a != true || ap.b != true {
				t.Fatalf("accepted %q -> %q: %v %v", listen, to, l, d)
			}
		}
	})
}
