package sigv4

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

const (
	testKey    = "AKIDCLIPPERTEST00001"
	testSecret = "test/secret+key=0123456789abcdefghijKLMN"
	testRegion = "clipper-1"
	testURL    = "https://ec2.clipper.test:443/"
	// describeBody is a typical EC2 call as the AWS CLI sends it.
	describeBody = "Action=DescribeInstances&Version=2016-11-15&InstanceId.1=i-0123456789abcdef0" +
		"&Filter.1.Name=instance-state-name&Filter.1.Value.1=running"
)

var errStoreDown = errors.New("store is down")

func testNow() time.Time { return time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC) }

func testCreds() Credentials { return Credentials{AccessKeyID: testKey, SecretAccessKey: testSecret} }

func testVerifier() *Verifier {
	return &Verifier{
		Lookup: func(_ context.Context, id string) (string, any, error) {
			switch id {
			case testKey:
				return testSecret, "alice", nil
			case "AKIDSTOREDOWN":
				return "", nil, errStoreDown
			}
			return "", nil, ErrUnknownKey
		},
		Now:             testNow,
		AllowedServices: []string{"ec2", "clipper"},
		Regions:         []string{testRegion},
	}
}

// onWire writes a client request out and reads it back as a server would.
func onWire(t testing.TB, r *http.Request, body []byte) (*http.Request, []byte) {
	t.Helper()
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	var b bytes.Buffer
	if err := r.Write(&b); err != nil {
		t.Fatal(err)
	}
	return readWire(t, b.String())
}

// newPost returns an EC2 form POST, unsigned.
func newPost(t testing.TB, body string) *http.Request {
	t.Helper()
	r, err := http.NewRequest(http.MethodPost, testURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	r.Header.Set("X-Amz-User-Agent", "aws-cli/2")
	return r
}

// signedPost returns what the server receives for a signed form POST.
func signedPost(t testing.TB, body string, creds Credentials, service string, at time.Time) (*http.Request, []byte) {
	t.Helper()
	r := newPost(t, body)
	if err := Sign(r, []byte(body), creds, testRegion, service, at); err != nil {
		t.Fatal(err)
	}
	return onWire(t, r, []byte(body))
}

// signedGet returns what the server receives for a GET, signed with a
// header or presigned for expires when that is non-zero.
func signedGet(t testing.TB, target string, creds Credentials, at time.Time, expires time.Duration) *http.Request {
	t.Helper()
	r, err := http.NewRequest(http.MethodGet, "https://ec2.clipper.test"+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	if expires == 0 {
		err = Sign(r, nil, creds, testRegion, "ec2", at)
	} else {
		err = Presign(r, creds, testRegion, "ec2", at, expires)
	}
	if err != nil {
		t.Fatal(err)
	}
	sr, _ := onWire(t, r, nil)
	return sr
}

// wantCode fails unless err carries the given sentinel and EC2 code.
func wantCode(t *testing.T, err error, kind error, code string) {
	t.Helper()
	if !errors.Is(err, kind) || Code(err) != code {
		t.Fatalf("error %v (code %q), want %v (code %q)", err, Code(err), kind, code)
	}
	if strings.Contains(err.Error(), testSecret) {
		t.Fatalf("message reveals the secret: %v", err)
	}
}

func TestRoundTrip(t *testing.T) {
	v := testVerifier()
	r, body := signedPost(t, describeBody, testCreds(), "ec2", testNow())
	if r.Host != "ec2.clipper.test" {
		t.Errorf("Host on the wire = %q; the default port should be left out", r.Host)
	}
	res, err := v.Verify(r, body)
	if err != nil {
		t.Fatal(err)
	}
	want := Result{AccessKeyID: testKey, Principal: "alice", Region: testRegion, Service: "ec2", SignedAt: testNow(),
		PayloadHash: hashHex([]byte(describeBody))}
	if res != want {
		t.Errorf("Result = %+v, want %+v", res, want)
	}

	creds := testCreds()
	creds.SessionToken = "session/token+=="
	r, body = signedPost(t, describeBody, creds, "clipper", testNow())
	if res, err = v.Verify(r, body); err != nil || res.SessionToken != creds.SessionToken || res.Service != "clipper" {
		t.Errorf("with session token: %+v, %v", res, err)
	}

	// EC2 also takes its parameters in a GET query; duplicate keys sort by value.
	r = signedGet(t, "/?Action=DescribeTags&Filter.1.Value.1=b&Filter.1.Value.1=a+z%2F%E2%98%83&Version=2016-11-15",
		testCreds(), testNow(), 0)
	if _, err := v.Verify(r, nil); err != nil {
		t.Errorf("GET: %v", err)
	}
}

func TestPresignRoundTrip(t *testing.T) {
	v := testVerifier()
	creds := testCreds()
	creds.SessionToken = "tok"
	r := signedGet(t, "/?Action=DescribeRegions&Version=2016-11-15&X-Amz-Expires=99", creds, testNow(), time.Minute)
	res, err := v.Verify(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Presigned || res.SessionToken != "tok" || res.AccessKeyID != testKey {
		t.Errorf("Result = %+v", res)
	}
	if strings.Count(r.URL.RawQuery, "X-Amz-Expires") != 1 {
		t.Errorf("Presign kept a stale X-Amz-Expires: %s", r.URL.RawQuery)
	}
}

func TestSkew(t *testing.T) {
	for _, tc := range []struct {
		offset time.Duration // request date minus server time
		ok     bool
	}{
		{0, true},
		{15*time.Minute - time.Second, true},
		{-15*time.Minute + time.Second, true},
		{15*time.Minute + time.Second, false},
		{-15*time.Minute - time.Second, false},
		{-24 * time.Hour, false},
	} {
		r, body := signedPost(t, describeBody, testCreds(), "ec2", testNow().Add(tc.offset))
		_, err := testVerifier().Verify(r, body)
		if tc.ok && err != nil {
			t.Errorf("offset %s: %v", tc.offset, err)
		}
		if !tc.ok {
			wantCode(t, err, ErrExpired, "RequestExpired")
		}
	}
	// MaxSkew narrows the window.
	v := testVerifier()
	v.MaxSkew = time.Minute
	r, body := signedPost(t, describeBody, testCreds(), "ec2", testNow().Add(2*time.Minute))
	_, err := v.Verify(r, body)
	wantCode(t, err, ErrExpired, "RequestExpired")
}

func TestPresignExpiry(t *testing.T) {
	for _, tc := range []struct {
		signed time.Duration // signing time relative to the server's
		ok     bool
	}{
		{0, true},
		{-59 * time.Second, true},
		{-61 * time.Second, false},
		{14 * time.Minute, true},  // client clock ahead, within the skew
		{16 * time.Minute, false}, // too far in the future
	} {
		r := signedGet(t, "/?Action=DescribeRegions", testCreds(), testNow().Add(tc.signed), time.Minute)
		_, err := testVerifier().Verify(r, nil)
		if tc.ok && err != nil {
			t.Errorf("signed at %s: %v", tc.signed, err)
		}
		if !tc.ok {
			wantCode(t, err, ErrExpired, "RequestExpired")
		}
	}
	r := signedGet(t, "/?Action=DescribeRegions", testCreds(), testNow(), time.Minute)
	r.URL.RawQuery = strings.Replace(r.URL.RawQuery, "X-Amz-Expires=60", "X-Amz-Expires=604801", 1)
	r.RequestURI = r.URL.RequestURI()
	_, err := testVerifier().Verify(r, nil)
	wantCode(t, err, ErrMalformed, "IncompleteSignature")
}

func TestTampered(t *testing.T) {
	v := testVerifier()
	for name, tamper := range map[string]func(r *http.Request, body []byte) []byte{
		"body": func(_ *http.Request, b []byte) []byte {
			return bytes.Replace(b, []byte("running"), []byte("stopped"), 1)
		},
		"body appended": func(_ *http.Request, b []byte) []byte { return append(b, "&DryRun=true"...) },
		"signed header": func(r *http.Request, b []byte) []byte {
			r.Header.Set("X-Amz-User-Agent", "other")
			return b
		},
		"content type": func(r *http.Request, b []byte) []byte {
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return b
		},
		"date": func(r *http.Request, b []byte) []byte {
			r.Header.Set("X-Amz-Date", testNow().Add(time.Second).Format(timeFormat))
			return b
		},
		"host":   func(r *http.Request, b []byte) []byte { r.Host = "evil.clipper.test"; return b },
		"method": func(r *http.Request, b []byte) []byte { r.Method = http.MethodPut; return b },
		"path":   func(r *http.Request, b []byte) []byte { r.RequestURI = "/x"; return b },
		"query":  func(r *http.Request, b []byte) []byte { r.RequestURI = "/?DryRun=true"; return b },
		"signature": func(r *http.Request, b []byte) []byte {
			a := r.Header.Get("Authorization")
			r.Header.Set("Authorization", a[:len(a)-1]+flipHex(a[len(a)-1]))
			return b
		},
		"secret": func(r *http.Request, b []byte) []byte {
			creds := testCreds()
			creds.SecretAccessKey += "x"
			c := newPost(t, describeBody)
			if err := Sign(c, b, creds, testRegion, "ec2", testNow()); err != nil {
				t.Fatal(err)
			}
			r.Header.Set("Authorization", c.Header.Get("Authorization"))
			return b
		},
	} {
		t.Run(name, func(t *testing.T) {
			r, body := signedPost(t, describeBody, testCreds(), "ec2", testNow())
			_, err := v.Verify(r, tamper(r, body))
			wantCode(t, err, ErrSignatureMismatch, "AuthFailure")
		})
	}

	r := signedGet(t, "/?Action=DescribeRegions&RegionName.1=a", testCreds(), testNow(), time.Minute)
	r.RequestURI = strings.Replace(r.RequestURI, "RegionName.1=a", "RegionName.1=b", 1)
	_, err := v.Verify(r, nil)
	wantCode(t, err, ErrSignatureMismatch, "AuthFailure")
}

// TestMismatchMessage checks that a failed verification tells the client
// what went wrong without the secret or the signature it should have sent.
func TestMismatchMessage(t *testing.T) {
	r, body := signedPost(t, describeBody, testCreds(), "ec2", testNow())
	good := r.Header.Get("Authorization")
	goodSig := good[strings.LastIndex(good, "=")+1:]
	r.Header.Set("Authorization", good[:len(good)-1]+flipHex(good[len(good)-1]))
	_, err := testVerifier().Verify(r, body)
	wantCode(t, err, ErrSignatureMismatch, "AuthFailure")
	if strings.Contains(err.Error(), goodSig) || !strings.Contains(err.Error(), testKey) {
		t.Errorf("message = %q", err)
	}
	var e *Error
	if !errors.As(err, &e) || !strings.HasPrefix(e.CanonicalRequest, "POST\n/\n\n") ||
		!strings.HasPrefix(e.StringToSign, algorithm+"\n") {
		t.Errorf("missing debugging detail: %+v", e)
	}
}

func TestUnsignedPayload(t *testing.T) {
	sign := func(body string) (*http.Request, []byte) {
		r := newPost(t, body)
		r.Header.Set("X-Amz-Content-Sha256", unsignedPayload)
		if err := SignHash(r, unsignedPayload, testCreds(), testRegion, "ec2", testNow()); err != nil {
			t.Fatal(err)
		}
		return onWire(t, r, []byte(body))
	}
	v := testVerifier()
	r, body := sign(describeBody)
	_, err := v.Verify(r, body)
	wantCode(t, err, ErrMalformed, "IncompleteSignature")

	v.AllowUnsignedPayload = true
	if res, err := v.Verify(r, body); err != nil || !res.UnsignedPayload {
		t.Errorf("allowed: %+v, %v", res, err)
	}
	v.AllowUnsignedPayload = false
	r, body = sign("")
	if _, err := v.Verify(r, body); err != nil {
		t.Errorf("empty body: %v", err)
	}

	// A declared payload hash must be the body's.
	r = newPost(t, describeBody)
	r.Header.Set("X-Amz-Content-Sha256", hashHex([]byte(describeBody)))
	if err := Sign(r, []byte(describeBody), testCreds(), testRegion, "ec2", testNow()); err != nil {
		t.Fatal(err)
	}
	r, body = onWire(t, r, []byte(describeBody))
	if _, err := v.Verify(r, body); err != nil {
		t.Errorf("declared hash: %v", err)
	}
	_, err = v.Verify(r, []byte(describeBody+"&x=1"))
	wantCode(t, err, ErrSignatureMismatch, "AuthFailure")
}

// TestDateHeader checks a request dated by the HTTP Date header instead of
// X-Amz-Date.
func TestDateHeader(t *testing.T) {
	r, body := signedPost(t, describeBody, testCreds(), "ec2", testNow())
	r.Header.Del("X-Amz-Date")
	r.Header.Set("Date", testNow().Format(http.TimeFormat))
	a := r.Header.Get("Authorization")
	a = strings.Replace(a, "x-amz-date", "date", 1)
	s, perr := parseAuthorization(a)
	if perr != nil {
		t.Fatal(perr)
	}
	headers, _ := canonicalHeaders(s.signedHeaders, headerGetter(r))
	creq := canonicalRequest("POST", "/", "", headers, s.headerList, hashHex(body))
	credScope := scope("20260304", testRegion, "ec2")
	sig := stringOfMAC(signingKey(testSecret, "20260304", testRegion, "ec2"), stringToSign(testNow(), credScope, creq))
	r.Header.Set("Authorization", a[:strings.LastIndex(a, "=")+1]+sig)
	if _, err := testVerifier().Verify(r, body); err != nil {
		t.Fatal(err)
	}
	r.Header.Del("Date")
	_, err := testVerifier().Verify(r, body)
	wantCode(t, err, ErrMalformed, "IncompleteSignature")
}
