package sigv4

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestWrongScope(t *testing.T) {
	v := testVerifier()
	sign := func(region, service string) (*http.Request, []byte) {
		r := newPost(t, describeBody)
		if err := Sign(r, []byte(describeBody), testCreds(), region, service, testNow()); err != nil {
			t.Fatal(err)
		}
		return onWire(t, r, []byte(describeBody))
	}
	r, body := sign("eu-west-1", "ec2")
	_, err := v.Verify(r, body)
	wantCode(t, err, ErrWrongScope, "AuthFailure")

	r, body = sign(testRegion, "s3")
	_, err = v.Verify(r, body)
	wantCode(t, err, ErrWrongScope, "AuthFailure")

	// With no AllowedServices only "ec2" is served; with no Regions any
	// region is.
	v.AllowedServices, v.Regions = nil, nil
	r, body = sign("eu-west-1", "ec2")
	if _, err := v.Verify(r, body); err != nil {
		t.Errorf("default scope: %v", err)
	}
	r, body = sign("eu-west-1", "clipper")
	_, err = v.Verify(r, body)
	wantCode(t, err, ErrWrongScope, "AuthFailure")

	// The scope's date must be the request's.
	r, body = signedPost(t, describeBody, testCreds(), "ec2", testNow())
	r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "/20260304/", "/20260303/", 1))
	_, err = testVerifier().Verify(r, body)
	wantCode(t, err, ErrMalformed, "IncompleteSignature")
}

func TestUnknownKey(t *testing.T) {
	creds := testCreds()
	creds.AccessKeyID = "AKIDNOBODY"
	r, body := signedPost(t, describeBody, creds, "ec2", testNow())
	_, err := testVerifier().Verify(r, body)
	wantCode(t, err, ErrUnknownKey, "AuthFailure")
	if !strings.Contains(err.Error(), "AKIDNOBODY") {
		t.Errorf("message = %q", err)
	}

	creds.AccessKeyID = "AKIDSTOREDOWN"
	r, body = signedPost(t, describeBody, creds, "ec2", testNow())
	_, err = testVerifier().Verify(r, body)
	wantCode(t, err, ErrInternal, "InternalError")
	if !errors.Is(err, errStoreDown) || strings.Contains(err.Error(), errStoreDown.Error()) {
		t.Errorf("store failure: %v; want the cause wrapped but not shown", err)
	}
}

func TestMissingAuth(t *testing.T) {
	v := testVerifier()
	r, body := onWire(t, newPost(t, describeBody), []byte(describeBody))
	_, err := v.Verify(r, []byte(describeBody))
	wantCode(t, err, ErrMissingAuth, "MissingAuthenticationToken")

	r.Header.Set("Authorization", "  ")
	_, err = v.Verify(r, body)
	wantCode(t, err, ErrMissingAuth, "MissingAuthenticationToken")

	// Signature Version 2 puts its parameters in the form body or query.
	v2 := describeBody + "&AWSAccessKeyId=" + testKey + "&SignatureVersion=2&SignatureMethod=HmacSHA256&Signature=x"
	r, body = onWire(t, newPost(t, v2), []byte(v2))
	_, err = v.Verify(r, body)
	wantCode(t, err, ErrUnsupportedAlgorithm, "IncompleteSignature")
	r = signedGet(t, "/?Action=DescribeRegions", testCreds(), testNow(), 0)
	r.Header.Del("Authorization")
	r.RequestURI = "/?Action=DescribeRegions&AWSAccessKeyId=AKID&SignatureVersion=2"
	_, err = v.Verify(r, nil)
	wantCode(t, err, ErrUnsupportedAlgorithm, "IncompleteSignature")
}

func TestMalformedAuthorization(t *testing.T) {
	r, body := signedPost(t, describeBody, testCreds(), "ec2", testNow())
	good := r.Header.Get("Authorization")
	sig := good[strings.LastIndex(good, "=")+1:]
	cred := testKey + "/20260304/" + testRegion + "/ec2/aws4_request"
	for header, kind := range map[string]error{
		"Bearer abc":                     ErrUnsupportedAlgorithm,
		"AWS AKID:c2lnbmF0dXJl":          ErrUnsupportedAlgorithm,
		"AWS4-ECDSA-P256-SHA256 " + cred: ErrUnsupportedAlgorithm,
		"AWS4-HMAC-SHA256":               ErrMalformed,
		"AWS4-HMAC-SHA256 Credential=" + cred + ", SignedHeaders=host;x-amz-date":                                                ErrMalformed,
		"AWS4-HMAC-SHA256 Credential=" + cred + ", SignedHeaders=host, Signature=" + sig + ", Signature=" + sig:                  ErrMalformed,
		"AWS4-HMAC-SHA256 Credential=" + cred + ", SignedHeaders=host, Signature=" + sig + ", Extra=1":                           ErrMalformed,
		"AWS4-HMAC-SHA256 Credential=" + cred + ", SignedHeaders=host, Signature=" + strings.ToUpper(sig):                        ErrMalformed,
		"AWS4-HMAC-SHA256 Credential=" + cred + ", SignedHeaders=host, Signature=abc":                                            ErrMalformed,
		"AWS4-HMAC-SHA256 Credential=" + testKey + "/20260304/ec2/aws4_request, SignedHeaders=host, Signature=" + sig:            ErrMalformed,
		"AWS4-HMAC-SHA256 Credential=" + testKey + "/2026-03-04/x/ec2/aws4_request, SignedHeaders=host, Signature=" + sig:        ErrMalformed,
		"AWS4-HMAC-SHA256 Credential=" + testKey + "/20260304/" + testRegion + "/ec2/aws5, SignedHeaders=host, Signature=" + sig: ErrMalformed,
		// Host must be signed; names are distinct and lower case.
		"AWS4-HMAC-SHA256 Credential=" + cred + ", SignedHeaders=x-amz-date, Signature=" + sig:                        ErrMalformed,
		"AWS4-HMAC-SHA256 Credential=" + cred + ", SignedHeaders=Host;x-amz-date, Signature=" + sig:                   ErrMalformed,
		"AWS4-HMAC-SHA256 Credential=" + cred + ", SignedHeaders=host;host, Signature=" + sig:                         ErrMalformed,
		"AWS4-HMAC-SHA256 Credential=" + cred + ", SignedHeaders=host;;x-amz-date, Signature=" + sig:                  ErrMalformed,
		"AWS4-HMAC-SHA256 Credential=" + cred + ", SignedHeaders=authorization;host, Signature=" + sig:                ErrMalformed,
		"AWS4-HMAC-SHA256 Credential=" + cred + ", SignedHeaders=host;x-amz-missing, Signature=" + sig:                ErrSignatureMismatch,
		"AWS4-HMAC-SHA256 Credential=" + cred + ",SignedHeaders=host;x-amz-date,Signature=" + strings.Repeat("0", 64): ErrSignatureMismatch,
	} {
		r.Header.Set("Authorization", header)
		_, err := testVerifier().Verify(r, body)
		if !errors.Is(err, kind) || Code(err) == "" {
			t.Errorf("%s: %v, want %v", header, err, kind)
		}
	}

	// Two Authorization headers, two dates, a bad date.
	for name, mutate := range map[string]func(r *http.Request){
		"two authorizations": func(r *http.Request) { r.Header.Add("Authorization", good) },
		"two dates":          func(r *http.Request) { r.Header.Add("X-Amz-Date", "20260304T050607Z") },
		"bad date":           func(r *http.Request) { r.Header.Set("X-Amz-Date", "2026-03-04T05:06:07Z") },
		"two tokens": func(r *http.Request) {
			r.Header.Add("X-Amz-Security-Token", "a")
			r.Header.Add("X-Amz-Security-Token", "b")
		},
		"header and query": func(r *http.Request) { r.RequestURI = "/?X-Amz-Signature=" + sig },
		"bad query":        func(r *http.Request) { r.RequestURI = "/?a=%zz" },
	} {
		r, body := signedPost(t, describeBody, testCreds(), "ec2", testNow())
		mutate(r)
		_, err := testVerifier().Verify(r, body)
		if !errors.Is(err, ErrMalformed) || Code(err) != "IncompleteSignature" {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestPresignedParams checks the presigned form's parameters: each must
// appear once, with valid values.
func TestPresignedParams(t *testing.T) {
	r := signedGet(t, "/?Action=DescribeRegions", testCreds(), testNow(), time.Minute)
	good := r.RequestURI
	for name, uri := range map[string]string{
		"signature twice":  good + "&X-Amz-Signature=" + strings.Repeat("0", 64),
		"credential twice": good + "&X-Amz-Credential=x",
		"token twice":      good + "&X-Amz-Security-Token=a&X-Amz-Security-Token=b",
		"no expiry":        strings.Replace(good, "X-Amz-Expires=60&", "", 1),
		"zero expiry":      strings.Replace(good, "X-Amz-Expires=60", "X-Amz-Expires=0", 1),
		"bad expiry":       strings.Replace(good, "X-Amz-Expires=60", "X-Amz-Expires=1m", 1),
		"host unsigned":    strings.Replace(good, "X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=x-amz-date", 1),
		"bad date":         strings.Replace(good, "X-Amz-Date=20260304T050607Z", "X-Amz-Date=20260304", 1),
		"no signature":     good[:strings.Index(good, "&X-Amz-Signature=")],
	} {
		r.RequestURI = uri
		_, err := testVerifier().Verify(r, nil)
		if !errors.Is(err, ErrMalformed) || Code(err) != "IncompleteSignature" {
			t.Errorf("%s: %v", name, err)
		}
	}
	r.RequestURI = strings.Replace(good, "X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Algorithm=AWS4-HMAC-SHA1", 1)
	_, err := testVerifier().Verify(r, nil)
	wantCode(t, err, ErrUnsupportedAlgorithm, "IncompleteSignature")

	// Ordinary parameters may repeat: they are sorted by value.
	r = signedGet(t, "/?Action=DescribeRegions&RegionName.1=b&RegionName.1=a", testCreds(), testNow(), time.Minute)
	r.RequestURI = strings.Replace(r.RequestURI, "RegionName.1=a&RegionName.1=b", "RegionName.1=b&RegionName.1=a", 1)
	if _, err := testVerifier().Verify(r, nil); err != nil {
		t.Errorf("repeated parameter, reordered: %v", err)
	}
}

func TestSignArguments(t *testing.T) {
	r, _ := http.NewRequest(http.MethodGet, "https://ec2.clipper.test/?a=%zz", nil)
	if err := Sign(r, nil, testCreds(), testRegion, "ec2", testNow()); err == nil {
		t.Error("Sign accepted a bad query")
	}
	for _, c := range []Credentials{{}, {AccessKeyID: "a/b", SecretAccessKey: "s"}} {
		if err := Sign(newPost(t, ""), nil, c, testRegion, "ec2", testNow()); err == nil {
			t.Errorf("Sign accepted credentials %+v", c)
		}
	}
	if err := Sign(newPost(t, ""), nil, testCreds(), "", "ec2", testNow()); err == nil {
		t.Error("Sign accepted an empty region")
	}
	for _, d := range []time.Duration{0, time.Millisecond, 1500 * time.Millisecond, 8 * 24 * time.Hour} {
		if err := Presign(newPost(t, ""), testCreds(), testRegion, "ec2", testNow(), d); err == nil {
			t.Errorf("Presign accepted expiry %s", d)
		}
	}
	if err := SignHash(newPost(t, ""), "nothex", testCreds(), testRegion, "ec2", testNow()); err == nil {
		t.Error("SignHash accepted a bad hash")
	}
	if _, err := (&Verifier{}).Verify(newPost(t, ""), nil); Code(err) != "InternalError" {
		t.Errorf("Verifier without Lookup: %v", err)
	}
	if Code(errors.New("other")) != "" || Code(nil) != "" {
		t.Error("Code of a foreign error is not empty")
	}
}
