package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/clipper-cloud/clipper/internal/sigv4"
)

// TestSDKSignedVerify signs each case with the SDK, sends it through the
// wire format and verifies it with sigv4.Verifier.
func TestSDKSignedVerify(t *testing.T) {
	v := &sigv4.Verifier{
		Lookup: func(_ context.Context, id string) (string, any, error) {
			if id != accessKeyID {
				return "", nil, sigv4.ErrUnknownKey
			}
			return secretKey, "sdk", nil
		},
		Now:             signingTime,
		AllowedServices: []string{"ec2", "clipper"},
		Regions:         []string{region},
	}
	for _, c := range cases() {
		t.Run(c.name, func(t *testing.T) {
			r, _, err := sign(c)
			if err != nil {
				t.Fatal(err)
			}
			wire, err := dump(r)
			if err != nil {
				t.Fatal(err)
			}
			srv, err := http.ReadRequest(bufio.NewReader(strings.NewReader(wire)))
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(srv.Body)
			if err != nil {
				t.Fatal(err)
			}
			res, err := v.Verify(srv, body)
			if err != nil {
				t.Fatalf("Verify: %v (%s)", err, sigv4.Code(err))
			}
			if res.Service != c.service || res.Presigned != (c.presign != 0) || (res.SessionToken != "") != c.token {
				t.Errorf("Result = %+v", res)
			}
		})
	}
}
