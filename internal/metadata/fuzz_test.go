package metadata

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzHandler drives the handler with arbitrary methods, paths and IMDSv2
// headers from known and unknown callers: it must never panic, never
// answer 5xx, and never put a token in a response to anything but a PUT
// of the token path.
func FuzzHandler(f *testing.F) {
	seeds := []struct {
		method, path, ttl, tok string
		xff                    bool
		who                    byte
	}{
		{"GET", "/latest/meta-data/instance-id", "", "", false, 0},
		{"PUT", "/latest/api/token", "21600", "", false, 0},
		{"PUT", "/latest/api/token", "0", "", false, 1},
		{"PUT", "/latest/api/token", "60", "", true, 0},
		{"GET", "/latest/api/token", "60", "", false, 0},
		{"GET", "/", "", "valid", false, 0},
		{"GET", "/latest/", "", "valid", false, 1},
		{"GET", "/2009-04-04/meta-data/public-keys/0/openssh-key", "", "valid", false, 0},
		{"GET", "/latest/meta-data/network/interfaces/macs/02:00:00:00:00:0a/", "", "valid", false, 0},
		{"GET", "/latest/meta-data//", "", "other", false, 0},
		{"HEAD", "/latest/user-data", "", "garbage", false, 1},
		{"GET", "/latest/meta-data/tags/instance/Name", "", "valid", false, 2},
		{"POST", "/latest/dynamic/instance-identity/document", "", "", false, 0},
		{"GET", "/latest/meta-data/../../etc/passwd", "", "valid", false, 0},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, s.ttl, s.tok, s.xff, s.who)
	}
	ts := newTestServer(f)
	valid := ts.token(f, markA, "21600")
	other := ts.token(f, markB, "21600")
	f.Fuzz(func(t *testing.T, method, path, ttl, tok string, xff bool, who byte) {
		mark := []uint32{markA, markB, 0, 0x0c1fffff}[int(who)%4]
		switch tok {
		case "valid":
			tok = valid
		case "other":
			tok = other
		}
		r := &http.Request{Method: method, URL: &url.URL{Path: path}, Header: http.Header{}, Proto: "HTTP/1.1",
			ProtoMajor: 1, ProtoMinor: 1, Host: "169.254.169.254"}
		if ttl != "" {
			r.Header.Set(hdrTTL, ttl)
		}
		if tok != "" {
			r.Header.Set(hdrToken, tok)
		}
		if xff {
			r.Header.Set("X-Forwarded-For", "10.0.0.1")
		}
		ci := &connInfo{mark: mark, setHops: func(int) error { return nil }}
		r = r.WithContext(withConn(r.Context(), ci))
		w := httptest.NewRecorder()
		ts.Handler().ServeHTTP(w, r)
		if w.Code >= 500 {
			t.Fatalf("%s %q: %d", method, path, w.Code)
		}
		body := w.Body.String()
		isTokenPUT := method == http.MethodPut && path == tokenPath
		if w.Code == 200 && isTokenPUT {
			if xff {
				t.Fatalf("token handed out to a forwarded request")
			}
			return
		}
		for _, e := range []*entry{ts.lookup(markA), ts.lookup(markB)} {
			if ts.valid(strings.TrimSpace(body), e) {
				t.Fatalf("%s %q answered with a token: %q", method, path, body)
			}
		}
		if strings.Contains(body, valid) || strings.Contains(body, other) {
			t.Fatalf("%s %q echoed a token", method, path)
		}
	})
}
