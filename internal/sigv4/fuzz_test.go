package sigv4

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// fuzzRequest builds the request a server would see from the fuzzed parts.
func fuzzRequest(target, authz, date, contentSHA string, body []byte) *http.Request {
	r := &http.Request{Method: http.MethodPost, RequestURI: target, Host: "ec2.clipper.test",
		Header: http.Header{
			"Content-Type":     {"application/x-www-form-urlencoded; charset=utf-8"},
			"X-Amz-User-Agent": {"aws-cli/2"},
		},
		URL: &url.URL{Path: "/"}, ContentLength: int64(len(body))}
	for _, v := range strings.Split(authz, "\n") {
		if v != "" {
			r.Header.Add("Authorization", v)
		}
	}
	if date != "" {
		r.Header.Set("X-Amz-Date", date)
	}
	if contentSHA != "" {
		r.Header.Set("X-Amz-Content-Sha256", contentSHA)
	}
	return r
}

// FuzzVerify feeds Verify arbitrary request targets, Authorization
// headers, dates, payload hashes and bodies. It must never panic, must fail
// only with this package's errors (so Code is never empty), must never put
// the secret in a message, and must accept the valid seeds.
func FuzzVerify(f *testing.F) {
	post, body := signedPost(f, describeBody, testCreds(), "ec2", testNow())
	authz := post.Header.Get("Authorization")
	date := post.Header.Get("X-Amz-Date")
	get := signedGet(f, "/?Action=DescribeRegions&Version=2016-11-15", testCreds(), testNow(), time.Minute)

	f.Add("/", authz, date, "", body)
	f.Add("/", authz, date, hashHex(body), body)
	f.Add("/", authz, date, unsignedPayload, body)
	f.Add(get.RequestURI, "", "", "", []byte(nil))
	f.Add(get.RequestURI+"&X-Amz-Signature=0", "", "", "", []byte(nil))
	f.Add(strings.Replace(get.RequestURI, "X-Amz-Expires=60", "X-Amz-Expires=-1", 1), "", "", "", []byte(nil))
	f.Add("/", "", "", "", body)
	f.Add("/", "", "", "", []byte("Action=DescribeRegions&AWSAccessKeyId=AKID&SignatureVersion=2"))
	f.Add("/", authz+"\n"+authz, date, "", body)
	f.Add("/", strings.Replace(authz, "Credential=", "Credential=/", 1), date, "", body)
	f.Add("/", "AWS4-HMAC-SHA256 Credential=a/b/c/d/e, SignedHeaders=, Signature=", "x", "", body)
	f.Add("/./a/../%zz?x=%", authz, date, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", body)
	f.Add("http://h", "Bearer t", date, "", []byte("\x00\xff"))
	f.Add("*", authz, "20260304T050607", "", body)

	f.Fuzz(func(t *testing.T, target, authz, date, contentSHA string, body []byte) {
		r := fuzzRequest(target, authz, date, contentSHA, body)
		res, err := testVerifier().Verify(r, body)
		if err == nil {
			if res.AccessKeyID != testKey {
				t.Fatalf("accepted with result %+v", res)
			}
			return
		}
		var e *Error
		if !errors.As(err, &e) || Code(err) == "" {
			t.Fatalf("untyped failure %T: %v", err, err)
		}
		if strings.Contains(err.Error(), testSecret) {
			t.Fatalf("message reveals the secret: %v", err)
		}
	})
}

// TestFuzzSeedsAccepted makes sure the valid seeds reach the success path,
// so the fuzzer starts from requests that verify.
func TestFuzzSeedsAccepted(t *testing.T) {
	post, body := signedPost(t, describeBody, testCreds(), "ec2", testNow())
	r := fuzzRequest("/", post.Header.Get("Authorization"), post.Header.Get("X-Amz-Date"), "", body)
	if _, err := testVerifier().Verify(r, body); err != nil {
		t.Fatal(err)
	}
	get := signedGet(t, "/?Action=DescribeRegions&Version=2016-11-15", testCreds(), testNow(), time.Minute)
	r = fuzzRequest(get.RequestURI, "", "", "", nil)
	if _, err := testVerifier().Verify(r, nil); err == nil {
		t.Fatal("a presigned GET verified as a POST")
	}
	r.Method = http.MethodGet
	r.Header.Del("Content-Type")
	if _, err := testVerifier().Verify(r, nil); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkVerify measures verifying a typical EC2 POST (DescribeInstances
// as the AWS CLI sends it), Lookup included.
func BenchmarkVerify(b *testing.B) {
	r, body := signedPost(b, describeBody, testCreds(), "ec2", testNow())
	r.Header.Set("User-Agent", "aws-cli/2.17.0 md/awscrt#0.20.11 ua/2.0 os/linux#6.8 md/arch#x86_64 lang/python#3.11.9")
	v := testVerifier()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(r, body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSign measures signing the same request.
func BenchmarkSign(b *testing.B) {
	body := []byte(describeBody)
	b.ReportAllocs()
	for b.Loop() {
		r := newPost(b, describeBody)
		if err := Sign(r, body, testCreds(), testRegion, "ec2", testNow()); err != nil {
			b.Fatal(err)
		}
	}
}
