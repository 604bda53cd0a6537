package nodeproto

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// ErrUnauthorized means the controller refused the node's credentials;
// retrying will not help.
var ErrUnauthorized = errors.New("the controller refused this node's credentials")

// Client is the node side of the protocol.
type Client struct {
	base   string
	token  string
	http   *http.Client
	nodeID string
}

// NewClient returns a client for the controller at base ("http://host:port").
// hc may be nil.
func NewClient(base, token string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second}}
	}
	return &Client{base: base, token: token, http: hc}
}

// SetNodeID sets the identity sent after registration.
func (c *Client) SetNodeID(id string) { c.nodeID = id }

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	c.auth(req)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := checkStatus(resp); err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: bad reply: %w", method, path, err)
	}
	return nil
}

func (c *Client) auth(req *http.Request) {
	req.Header.Set("Authorization", "Bearer "+c.token)
	if c.nodeID != "" {
		req.Header.Set(HeaderNodeID, c.nodeID)
	}
}

// StatusError is a refusal from the controller.
type StatusError struct {
	Status int
	Msg    string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("controller answered %d: %s", e.Status, e.Msg)
}

func checkStatus(resp *http.Response) error {
	if resp.StatusCode < 300 {
		return nil
	}
	var e struct {
		Error string `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if json.Unmarshal(b, &e) != nil || e.Error == "" {
		e.Error = string(b)
	}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return fmt.Errorf("%w: %s", ErrUnauthorized, e.Error)
	}
	return &StatusError{Status: resp.StatusCode, Msg: e.Error}
}

// Register announces the node and learns its ID.
func (c *Client) Register(ctx context.Context, reg Registration) (RegistrationReply, error) {
	var out RegistrationReply
	err := c.do(ctx, http.MethodPost, PathRegister, reg, &out)
	return out, err
}

// Desired long-polls for desired state newer than since.
func (c *Client) Desired(ctx context.Context, since int64, wait time.Duration) (Desired, error) {
	var out Desired
	q := url.Values{"since": {strconv.FormatInt(since, 10)}, "wait": {wait.String()}}
	err := c.do(ctx, http.MethodGet, PathDesired+"?"+q.Encode(), nil, &out)
	return out, err
}

// Report sends observations.
func (c *Client) Report(ctx context.Context, r Report) (ReportReply, error) {
	var out ReportReply
	err := c.do(ctx, http.MethodPost, PathReport, r, &out)
	return out, err
}

// Blob downloads an image blob.
func (c *Client) Blob(ctx context.Context, sha string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+PathBlobs+sha, nil)
	if err != nil {
		return nil, err
	}
	c.auth(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if err := checkStatus(resp); err != nil {
		resp.Body.Close()
		return nil, err
	}
	return resp.Body, nil
}
