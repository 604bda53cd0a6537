package metadata

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

const (
	markA uint32 = 0x0c100001
	markB uint32 = 0x0c100002
)

var mdA = nodeproto.InstanceMetadata{
	AccountID: "123456789012", Region: "clipper-1", Zone: "clipper-1a", ImageID: "ami-0abc",
	InstanceID: "i-aaaa", InstanceType: "t3.micro", ReservationID: "r-0001", LaunchIndex: 0,
	LaunchTime: time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC), Hostname: "ip-10-7-0-10.clipper-1.compute.internal",
	LocalIPv4: "10.7.0.10", PublicIPv4: "198.51.100.7", MAC: "02:00:00:00:00:0A", VPCID: "vpc-1",
	VPCCIDR: "10.7.0.0/16", SubnetID: "subnet-1", SubnetCIDR: "10.7.0.0/24", InterfaceID: "eni-1",
	SecurityGroups: []string{"default", "web"}, GroupIDs: []string{"sg-1", "sg-2"},
	PublicKeys: []nodeproto.PublicKey{{Name: "mykey", OpenSSH: "ssh-ed25519 AAAA me@host"}},
	UserData:   []byte("#!/bin/sh\necho hi\n"),
	Tags:       map[string]string{"Name": "web-1", "bad/key": "x"},
}

var mdB = nodeproto.InstanceMetadata{AccountID: "210987654321", Region: "clipper-1", Zone: "clipper-1b",
	InstanceID: "i-bbbb", InstanceType: "t3.small", LocalIPv4: "10.7.0.11", MAC: "02:00:00:00:00:0b"}

var required = nodeproto.MetadataOptions{HTTPTokens: "required", HTTPEndpoint: "enabled", HopLimit: 2, Tags: true}

// testServer is a Server with a settable clock and two instances.
type testServer struct {
	*Server
	clock time.Time
	hops  map[uint32]int // last hop limit set per mark
}

func newTestServer(t testing.TB) *testServer {
	ts := &testServer{Server: New(nil), clock: time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC), hops: map[uint32]int{}}
	ts.now = func() time.Time { return ts.clock }
	ts.Set("i-aaaa", markA, mdA, required)
	ts.Set("i-bbbb", markB, mdB, nodeproto.MetadataOptions{HTTPTokens: "optional", HTTPEndpoint: "enabled", HopLimit: 1})
	return ts
}

// do sends a request as if it came in on a connection with mark.
func (ts *testServer) do(method, path string, mark uint32, hdr map[string]string) *httptest.ResponseRecorder {
	r := &http.Request{Method: method, URL: &url.URL{Path: path}, Header: http.Header{}, Proto: "HTTP/1.1",
		ProtoMajor: 1, ProtoMinor: 1, Host: "169.254.169.254"}
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	ci := &connInfo{mark: mark, setHops: func(n int) error { ts.hops[mark] = n; return nil }}
	r = r.WithContext(withConn(r.Context(), ci))
	w := httptest.NewRecorder()
	ts.Handler().ServeHTTP(w, r)
	return w
}

func (ts *testServer) token(t testing.TB, mark uint32, ttl string) string {
	t.Helper()
	w := ts.do("PUT", "/latest/api/token", mark, map[string]string{hdrTTL: ttl})
	if w.Code != 200 {
		t.Fatalf("PUT token: %d %s", w.Code, w.Body)
	}
	return w.Body.String()
}

func TestTokenRequiredForGet(t *testing.T) {
	ts := newTestServer(t)
	if w := ts.do("GET", "/latest/meta-data/instance-id", markA, nil); w.Code != 401 {
		t.Fatalf("IMDSv1 GET with tokens required: %d, want 401", w.Code)
	}
	tok := ts.token(t, markA, "21600")
	w := ts.do("GET", "/latest/meta-data/instance-id", markA, map[string]string{hdrToken: tok})
	if w.Code != 200 || w.Body.String() != "i-aaaa" {
		t.Fatalf("GET with token: %d %q", w.Code, w.Body)
	}
}

func TestTokenResponse(t *testing.T) {
	ts := newTestServer(t)
	w := ts.do("PUT", "/latest/api/token", markA, map[string]string{hdrTTL: "300"})
	if w.Code != 200 || w.Header().Get(hdrTTL) != "300" || len(w.Body.String()) < 20 {
		t.Fatalf("PUT token: %d %v %q", w.Code, w.Header(), w.Body)
	}
	if ts.hops[markA] != 2 {
		t.Errorf("hop limit set to %d, want the instance's 2", ts.hops[markA])
	}
	ts.token(t, markB, "1")
	if ts.hops[markB] != 1 {
		t.Errorf("hop limit set to %d, want 1", ts.hops[markB])
	}
}

func TestTokenTTLBounds(t *testing.T) {
	ts := newTestServer(t)
	for _, ttl := range []string{"", "0", "21601", "-1", "abc", "1.5", "99999999999999999999"} {
		hdr := map[string]string{hdrTTL: ttl}
		if ttl == "" {
			hdr = nil
		}
		if w := ts.do("PUT", "/latest/api/token", markA, hdr); w.Code != 400 {
			t.Errorf("ttl %q: %d, want 400", ttl, w.Code)
		}
	}
	for _, ttl := range []string{"1", "21600", " 60 "} {
		ts.token(t, markA, ttl)
	}
}

func TestTokenExpires(t *testing.T) {
	ts := newTestServer(t)
	tok := ts.token(t, markA, "60")
	get := func() int {
		return ts.do("GET", "/latest/meta-data/instance-id", markA, map[string]string{hdrToken: tok}).Code
	}
	ts.clock = ts.clock.Add(59 * time.Second)
	if c := get(); c != 200 {
		t.Fatalf("token before expiry: %d", c)
	}
	ts.clock = ts.clock.Add(time.Second)
	if c := get(); c != 401 {
		t.Fatalf("expired token: %d, want 401", c)
	}
}

func TestTokenBoundToInstance(t *testing.T) {
	ts := newTestServer(t)
	tokA := ts.token(t, markA, "600")
	// B's tokens are optional, but a token it sends must be its own.
	if w := ts.do("GET", "/latest/meta-data/instance-id", markB, map[string]string{hdrToken: tokA}); w.Code != 401 {
		t.Fatalf("A's token used by B: %d %q, want 401", w.Code, w.Body)
	}
	// The same instance ID on another port (mark) is another holder.
	ts.Set("i-aaaa", markA+7, mdA, required)
	if w := ts.do("GET", "/latest/meta-data/instance-id", markA+7, map[string]string{hdrToken: tokA}); w.Code != 401 {
		t.Fatalf("token after the port changed: %d, want 401", w.Code)
	}
	for _, bad := range []string{"x", strings.Repeat("A", 34), tokA[:len(tokA)-1] + "B", strings.Repeat("a", 500)} {
		if w := ts.do("GET", "/latest/meta-data/instance-id", markB, map[string]string{hdrToken: bad}); w.Code != 401 {
			t.Errorf("token %q: %d, want 401", bad, w.Code)
		}
	}
}

func TestForwardedTokenRequestRefused(t *testing.T) {
	ts := newTestServer(t)
	w := ts.do("PUT", "/latest/api/token", markA, map[string]string{hdrTTL: "60", "X-Forwarded-For": "203.0.113.9"})
	if w.Code != 403 {
		t.Fatalf("PUT with X-Forwarded-For: %d, want 403", w.Code)
	}
	if _, set := ts.hops[markA]; set {
		t.Error("hop limit touched for a refused request")
	}
}

func TestEndpointDisabledAndUnknownCallers(t *testing.T) {
	ts := newTestServer(t)
	ts.Set("i-bbbb", markB, mdB, nodeproto.MetadataOptions{HTTPTokens: "optional", HTTPEndpoint: "disabled"})
	for _, c := range []struct {
		method string
		mark   uint32
	}{{"GET", markB}, {"PUT", markB}, {"GET", 0}, {"GET", 0x0c1fffff}, {"PUT", 0}} {
		path := "/latest/meta-data/instance-id"
		if c.method == "PUT" {
			path = "/latest/api/token"
		}
		if w := ts.do(c.method, path, c.mark, map[string]string{hdrTTL: "60"}); w.Code != 403 {
			t.Errorf("%s mark %#x: %d, want 403", c.method, c.mark, w.Code)
		}
	}
	ts.Remove("i-aaaa")
	if w := ts.do("PUT", "/latest/api/token", markA, map[string]string{hdrTTL: "60"}); w.Code != 403 {
		t.Errorf("removed instance: %d, want 403", w.Code)
	}
	// A request without connection facts belongs to nobody.
	w := httptest.NewRecorder()
	ts.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/latest/meta-data/", nil))
	if w.Code != 403 {
		t.Errorf("request without a connection: %d, want 403", w.Code)
	}
}

func TestMethods(t *testing.T) {
	ts := newTestServer(t)
	for _, c := range []struct{ method, path string }{
		{"GET", "/latest/api/token"}, {"POST", "/latest/api/token"},
		{"POST", "/latest/meta-data/"}, {"PUT", "/latest/meta-data/instance-id"}, {"DELETE", "/"},
	} {
		if w := ts.do(c.method, c.path, markB, nil); w.Code != 405 {
			t.Errorf("%s %s: %d, want 405", c.method, c.path, w.Code)
		}
	}
	if w := ts.do("HEAD", "/latest/meta-data/instance-id", markB, nil); w.Code != 200 || w.Body.Len() != 0 {
		t.Errorf("HEAD: %d %q", w.Code, w.Body)
	}
}

func TestPaths(t *testing.T) {
	ts := newTestServer(t)
	tok := ts.token(t, markA, "600")
	get := func(mark uint32, path string) (int, string) {
		w := ts.do("GET", path, mark, map[string]string{hdrToken: tok})
		if mark == markB {
			w = ts.do("GET", path, mark, nil)
		}
		return w.Code, w.Body.String()
	}
	mac := "02:00:00:00:00:0a"
	nic := "/latest/meta-data/network/interfaces/macs/" + mac + "/"
	cases := []struct {
		mark uint32
		path string
		want string // "404" for not found
	}{
		{markA, "/latest/meta-data/instance-id", "i-aaaa"},
		{markA, "/2009-04-04/meta-data/instance-id", "i-aaaa"},
		{markA, "/2021-03-23/meta-data/instance-id", "i-aaaa"},
		{markA, "/2030-01-01/meta-data/instance-id", "404"},
		{markA, "/latest/meta-data/ami-id", "ami-0abc"},
		{markA, "/latest/meta-data/instance-type", "t3.micro"},
		{markA, "/latest/meta-data/local-hostname", "ip-10-7-0-10.clipper-1.compute.internal"},
		{markA, "/latest/meta-data/hostname", "ip-10-7-0-10.clipper-1.compute.internal"},
		{markA, "/latest/meta-data/local-ipv4", "10.7.0.10"},
		{markA, "/latest/meta-data/public-ipv4", "198.51.100.7"},
		{markB, "/latest/meta-data/public-ipv4", "404"},
		{markA, "/latest/meta-data/mac", mac},
		{markA, "/latest/meta-data/placement/availability-zone", "clipper-1a"},
		{markA, "/latest/meta-data/placement/region", "clipper-1"},
		{markA, "/latest/meta-data/placement/", "availability-zone\nregion"},
		{markA, "/latest/meta-data/placement", "availability-zone\nregion"},
		{markA, "/latest/meta-data/reservation-id", "r-0001"},
		{markA, "/latest/meta-data/ami-launch-index", "0"},
		{markA, "/latest/meta-data/security-groups", "default\nweb"},
		{markA, "/latest/meta-data/public-keys/", "0=mykey"},
		{markA, "/latest/meta-data/public-keys/0/", "openssh-key"},
		{markA, "/latest/meta-data/public-keys/0/openssh-key", "ssh-ed25519 AAAA me@host"},
		{markB, "/latest/meta-data/public-keys/", "404"},
		{markA, "/latest/meta-data/network/interfaces/macs/", mac + "/"},
		{markA, nic + "device-number", "0"},
		{markA, nic + "local-ipv4s", "10.7.0.10"},
		{markA, nic + "mac", mac},
		{markA, nic + "subnet-id", "subnet-1"},
		{markA, nic + "vpc-id", "vpc-1"},
		{markA, nic + "subnet-ipv4-cidr-block", "10.7.0.0/24"},
		{markA, nic + "vpc-ipv4-cidr-block", "10.7.0.0/16"},
		{markA, nic + "security-group-ids", "sg-1\nsg-2"},
		{markA, nic + "interface-id", "eni-1"},
		{markA, nic + "owner-id", "123456789012"},
		{markA, "/latest/meta-data/tags/instance/", "Name"},
		{markA, "/latest/meta-data/tags/instance/Name", "web-1"},
		{markB, "/latest/meta-data/tags/instance/", "404"},
		{markA, "/latest/user-data", "#!/bin/sh\necho hi\n"},
		{markB, "/latest/user-data", "404"},
		{markA, "/latest/", "dynamic\nmeta-data\nuser-data"},
		{markB, "/latest", "dynamic\nmeta-data"},
		{markA, "/latest/dynamic/", "instance-identity/"},
		{markA, "/latest/dynamic/instance-identity/", "document"},
		{markA, "/latest/meta-data/nope", "404"},
		{markA, "/latest/meta-data//instance-id", "404"},
		{markA, "/latest/meta-data/instance-id/x", "404"},
		{markA, "/latest/meta-data/../user-data", "404"},
		{markA, "latest/meta-data/instance-id", "404"},
	}
	for _, c := range cases {
		code, body := get(c.mark, c.path)
		if c.want == "404" {
			if code != 404 {
				t.Errorf("%s: %d %q, want 404", c.path, code, body)
			}
			continue
		}
		if code != 200 || body != c.want {
			t.Errorf("%s (mark %#x): %d %q, want %q", c.path, c.mark, code, body, c.want)
		}
	}
	code, body := get(markA, "/")
	if code != 200 || !strings.HasPrefix(body, "1.0\n") || !strings.Contains(body, "\n2009-04-04\n") ||
		!strings.HasSuffix(body, "\nlatest") {
		t.Errorf("/: %d %q", code, body)
	}
	code, body = get(markA, "/latest/meta-data/")
	for _, want := range []string{"ami-id", "instance-id", "local-ipv4", "placement/", "public-keys/", "network/", "tags/"} {
		if code != 200 || !strings.Contains("\n"+body+"\n", "\n"+want+"\n") {
			t.Errorf("meta-data/ listing lacks %q: %q", want, body)
		}
	}
	code, body = get(markA, "/latest/dynamic/instance-identity/document")
	var doc map[string]any
	if code != 200 || json.Unmarshal([]byte(body), &doc) != nil {
		t.Fatalf("identity document: %d %q", code, body)
	}
	for k, want := range map[string]any{"accountId": "123456789012", "instanceId": "i-aaaa", "imageId": "ami-0abc",
		"instanceType": "t3.micro", "availabilityZone": "clipper-1a", "region": "clipper-1", "privateIp": "10.7.0.10",
		"pendingTime": "2026-11-25T08:00:00Z", "version": "2017-09-30", "architecture": "x86_64"} {
		if doc[k] != want && !(k == "architecture" && doc[k] != "") {
			t.Errorf("document %s = %v, want %v", k, doc[k], want)
		}
	}
	if w := ts.do("GET", "/latest/user-data", markA, map[string]string{hdrToken: tok}); w.Header().Get("Content-Type") != "application/octet-stream" {
		t.Errorf("user-data content type %q", w.Header().Get("Content-Type"))
	}
}
