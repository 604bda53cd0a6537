// Command sdkcompat signs a set of requests with the AWS SDK for Go v2 and
// writes them, as they go on the wire, to ../testdata/sdk, where the sigv4
// package's tests verify them. It is a module of its own so that the main
// module does not depend on the SDK. Run it with `go run .` in this
// directory after changing the cases or updating the SDK; `go test` here
// checks the same cases live against the sigv4 Verifier.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Inputs shared by every case; the tests in ../ use the same values.
const (
	accessKeyID  = "AKIDCLIPPERSDKTEST01"
	secretKey    = "clipper/sdk+test=secret0123456789ABCDEFG"
	sessionToken = "FwoGZXIvYXdzEXAMPLE//token+with/odd=chars"
	region       = "us-east-1"
	endpoint     = "https://ec2.clipper.test"
)

// signingTime is when every case is signed.
func signingTime() time.Time { return time.Date(2026, 1, 15, 10, 20, 30, 0, time.UTC) }

// sdkCase is one request to sign.
type sdkCase struct {
	name    string
	method  string
	target  string // path and query, appended to endpoint
	form    url.Values
	service string
	token   bool
	presign time.Duration // presigned URL when non-zero
}

func cases() []sdkCase {
	describe := url.Values{
		"Action":                         {"DescribeInstances"},
		"Version":                        {"2016-11-15"},
		"InstanceId.1":                   {"i-0123456789abcdef0"},
		"Filter.1.Name":                  {"instance-state-name"},
		"Filter.1.Value.1":               {"running"},
		"Filter.1.Value.2":               {"pending"},
		"TagSpecification.1.Tag.1.Value": {"a b+c/d~e*f\u2603"},
	}
	specials := url.Values{
		"Action":           {"DescribeTags"},
		"Version":          {"2016-11-15"},
		"Filter.1.Name":    {"tag:Name"},
		"Filter.1.Value.1": {"a b+c/d~e*f\u2603"},
		"Filter.1.Value.2": {""},
	}
	return []sdkCase{
		{name: "ec2-post-form", method: http.MethodPost, target: "/", form: describe, service: "ec2"},
		{name: "ec2-post-form-session-token", method: http.MethodPost, target: "/", form: describe, service: "ec2", token: true},
		{name: "clipper-post-form", method: http.MethodPost, target: "/", form: describe, service: "clipper"},
		{name: "ec2-get-query-specials", method: http.MethodGet, target: "/?" + specials.Encode(), service: "ec2"},
		{name: "ec2-get-unnormalized-path", method: http.MethodGet, target: "/a/./b/../c//d?Action=DescribeRegions&Version=2016-11-15", service: "ec2"},
		{name: "ec2-presigned-get", method: http.MethodGet, target: "/?Action=DescribeRegions&Version=2016-11-15", service: "ec2", presign: 5 * time.Minute},
		{name: "ec2-presigned-get-session-token", method: http.MethodGet, target: "/?" + specials.Encode(), service: "ec2", token: true, presign: time.Hour},
	}
}

// sign builds and signs the request of c with the SDK's signer and returns
// it with its body.
func sign(c sdkCase) (*http.Request, []byte, error) {
	var body []byte
	if c.form != nil {
		body = []byte(c.form.Encode())
	}
	r, err := http.NewRequest(c.method, endpoint+c.target, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	if c.form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	}
	creds := aws.Credentials{AccessKeyID: accessKeyID, SecretAccessKey: secretKey}
	if c.token {
		creds.SessionToken = sessionToken
	}
	sum := sha256.Sum256(body)
	hash := hex.EncodeToString(sum[:])
	signer := v4.NewSigner()
	ctx := context.Background()
	if c.presign == 0 {
		err := signer.SignHTTP(ctx, creds, r, hash, c.service, region, signingTime())
		return r, body, err
	}
	q := r.URL.Query()
	q.Set("X-Amz-Expires", strconv.FormatInt(int64(c.presign/time.Second), 10))
	r.URL.RawQuery = q.Encode()
	signedURL, _, err := signer.PresignHTTP(ctx, creds, r, hash, c.service, region, signingTime())
	if err != nil {
		return nil, nil, err
	}
	p, err := http.NewRequest(c.method, signedURL, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("presigned URL %q: %w", signedURL, err)
	}
	return p, nil, nil
}
