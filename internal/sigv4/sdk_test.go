package sigv4

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The inputs sdkcompat signs with (see sdkcompat/cases.go).
const (
	sdkKey    = "AKIDCLIPPERSDKTEST01"
	sdkSecret = "clipper/sdk+test=secret0123456789ABCDEFG"
)

// readWire parses a request in wire format as a Go server would.
func readWire(t testing.TB, wire string) (*http.Request, []byte) {
	t.Helper()
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(wire)))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return r.WithContext(context.Background()), body
}

// TestSDKSigned verifies requests signed by aws-sdk-go-v2's signer: POST
// forms (with and without a session token, for "ec2" and "clipper"), a GET
// with awkward query values, a path the SDK signs without normalising, and
// presigned GETs. Regenerate them with `go run .` in sdkcompat.
func TestSDKSigned(t *testing.T) {
	files, err := filepath.Glob("testdata/sdk/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no SDK-signed requests: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			s := readSections(t, f)
			meta := map[string]string{}
			for _, l := range strings.Split(s["meta"], "\n") {
				k, v, _ := strings.Cut(l, ": ")
				meta[k] = v
			}
			at, err := time.Parse(timeFormat, meta["time"])
			if err != nil {
				t.Fatal(err)
			}
			v := &Verifier{
				Lookup: func(_ context.Context, id string) (string, any, error) {
					if id != sdkKey {
						return "", nil, ErrUnknownKey
					}
					return sdkSecret, nil, nil
				},
				Now:             func() time.Time { return at.Add(time.Minute) },
				AllowedServices: []string{"ec2", "clipper"},
				Regions:         []string{"us-east-1"},
			}
			r, body := readWire(t, s["wire"])
			res, err := v.Verify(r, body)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if res.Service != meta["service"] || res.AccessKeyID != sdkKey || !res.SignedAt.Equal(at) {
				t.Errorf("Result = %+v", res)
			}
			if strings.Contains(f, "session-token") && res.SessionToken == "" {
				t.Error("session token not reported")
			}

			// Any change to what the SDK signed must be caught.
			if len(body) > 0 {
				tampered := append([]byte{}, body...)
				tampered[len(tampered)-1] ^= 1
				if _, err := v.Verify(r, tampered); Code(err) != codeAuthFailure {
					t.Errorf("tampered body: %v", err)
				}
			}
			r2, body2 := readWire(t, strings.Replace(s["wire"], "Version=2016-11-15", "Version=2016-11-16", 1))
			if _, err := v.Verify(r2, body2); Code(err) != codeAuthFailure {
				t.Errorf("tampered parameter: %v", err)
			}
		})
	}
}
