package sigv4

import (
	"net/http"
	"testing"
	"time"
)

// TestVerifyStream checks requests whose body the caller streams: the
// signature covers the declared payload hash, which the Result reports.
func TestVerifyStream(t *testing.T) {
	blob := []byte("a large image, streamed")
	put := func(hash string, declare bool) *http.Request {
		r, err := http.NewRequest(http.MethodPut, "https://ec2.clipper.test/clipper/v1/blobs/x", nil)
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Content-Type", "application/octet-stream")
		if declare {
			r.Header.Set("X-Amz-Content-Sha256", hash)
		}
		if err := SignHash(r, hash, testCreds(), testRegion, "clipper", testNow()); err != nil {
			t.Fatal(err)
		}
		sr, _ := onWire(t, r, blob)
		return sr
	}
	v := testVerifier()
	for _, hash := range []string{hashHex(blob), unsignedPayload} {
		res, err := v.VerifyStream(put(hash, true))
		if err != nil {
			t.Fatalf("%s: %v", hash, err)
		}
		if res.PayloadHash != hash || res.UnsignedPayload != (hash == unsignedPayload) || res.Service != "clipper" {
			t.Errorf("Result = %+v", res)
		}
	}

	// The declared hash is signed: changing it breaks the signature.
	r := put(hashHex(blob), true)
	r.Header.Set("X-Amz-Content-Sha256", hashHex([]byte("other")))
	_, err := v.VerifyStream(r)
	wantCode(t, err, ErrSignatureMismatch, "AuthFailure")

	// Without a declared hash there is nothing to check the body against.
	_, err = v.VerifyStream(put(hashHex(blob), false))
	wantCode(t, err, ErrMalformed, "IncompleteSignature")

	// Presigned GETs have no body: the empty payload hash is signed.
	g := signedGet(t, "/?Action=DescribeRegions", testCreds(), testNow(), time.Minute)
	if res, err := v.VerifyStream(g); err != nil || res.PayloadHash != emptyHash {
		t.Errorf("presigned: %+v, %v", res, err)
	}
}
