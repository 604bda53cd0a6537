// Package client is the clipper CLI's client for a Clipper controller: EC2
// Query calls and native JSON API calls, signed with SigV4 using the same
// environment variables as the AWS CLI (so `. aws.env` is all it needs).
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/clipper-cloud/clipper/internal/sigv4"
	"github.com/clipper-cloud/clipper/internal/version"
)

// Client talks to one controller.
type Client struct {
	Endpoint string // "http://127.0.0.1:8773"
	Region   string
	Creds    sigv4.Credentials
	HTTP     *http.Client
}

// Options override what the environment says.
type Options struct {
	Endpoint, Region, AccessKey, SecretKey string
}

// FromEnv builds a client from flags, falling back to AWS_ENDPOINT_URL,
// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and
// AWS_REGION / AWS_DEFAULT_REGION.
func FromEnv(o Options) (*Client, error) {
	pick := func(v string, envs ...string) string {
		if v != "" {
			return v
		}
		for _, e := range envs {
			if s := os.Getenv(e); s != "" {
				return s
			}
		}
		return ""
	}
	c := &Client{
		Endpoint: strings.TrimRight(pick(o.Endpoint, "AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL"), "/"),
		Region:   pick(o.Region, "AWS_REGION", "AWS_DEFAULT_REGION"),
		Creds: sigv4.Credentials{
			AccessKeyID:     pick(o.AccessKey, "AWS_ACCESS_KEY_ID"),
			SecretAccessKey: pick(o.SecretKey, "AWS_SECRET_ACCESS_KEY"),
			SessionToken:    os.Getenv("AWS_SESSION_TOKEN"),
		},
		HTTP: &http.Client{Timeout: 0},
	}
	switch {
	case c.Endpoint == "":
		return nil, errors.New("no endpoint: set AWS_ENDPOINT_URL (. <data-dir>/aws.env) or pass --endpoint-url")
	case c.Creds.AccessKeyID == "" || c.Creds.SecretAccessKey == "":
		return nil, errors.New("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (. <data-dir>/aws.env)")
	case c.Region == "":
		c.Region = "clipper-1"
	}
	return c, nil
}

// APIError is an error answer from the controller.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Call runs an EC2 action and decodes its XML answer into out (may be nil).
func (c *Client) Call(ctx context.Context, action string, params url.Values, out any) error {
	form := url.Values{"Action": {action}, "Version": {version.APIVersion}}
	for k, v := range params {
		form[k] = v
	}
	body := []byte(form.Encode())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Endpoint+"/", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	if err := sigv4.Sign(req, body, c.Creds, c.Region, "ec2", time.Now()); err != nil {
		return err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Errors []struct {
				Code    string `xml:"Code"`
				Message string `xml:"Message"`
			} `xml:"Errors>Error"`
		}
		if xml.Unmarshal(data, &e) == nil && len(e.Errors) > 0 {
			return &APIError{Status: resp.StatusCode, Code: e.Errors[0].Code, Message: e.Errors[0].Message}
		}
		return &APIError{Status: resp.StatusCode, Code: "HTTP", Message: strings.TrimSpace(string(data))}
	}
	if out == nil {
		return nil
	}
	return xml.Unmarshal(data, out)
}

// Do runs a native API call. body may be nil; payloadHash is the SHA-256 of
// the body, or "UNSIGNED-PAYLOAD" for a streamed body named by its digest.
func (c *Client) Do(ctx context.Context, method, path string, body io.Reader, size int64, payloadHash string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.Endpoint+path, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.ContentLength = size
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	req.Header.Set("X-Amz-Content-Sha256", payloadHash)
	if err := sigv4.SignHash(req, payloadHash, c.Creds, c.Region, "clipper", time.Now()); err != nil {
		return err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		}
		if json.Unmarshal(data, &e) == nil && e.Code != "" {
			return &APIError{Status: resp.StatusCode, Code: e.Code, Message: e.Message}
		}
		return &APIError{Status: resp.StatusCode, Code: "HTTP", Message: strings.TrimSpace(string(data))}
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
