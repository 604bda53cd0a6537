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
	"sync"
	"time"

	"github.com/clipper-cloud/clipper/internal/pki"
)

// ErrUnauthorized means the controller refused the node's credentials;
// retrying will not help.
var ErrUnauthorized = errors.New("the controller refused this node's credentials")

// Client is the node side of the protocol. It authenticates with the
// node's certificate and renews it once two thirds of its lifetime have
// passed (on the next request after that point).
type Client struct {
	base   string
	id     *Identity
	nodeID string

	mu        sync.Mutex
	http      *http.Client
	renewing  bool
	lastRenew time.Time // last attempt
	onRefused func(error)
}

// OnRefused sets a function called when the controller refuses the node's
// credentials (revoked or expired certificate), so that the node can stop
// at once with the controller's reason.
func (c *Client) OnRefused(fn func(error)) {
	c.mu.Lock()
	c.onRefused = fn
	c.mu.Unlock()
}

func (c *Client) refused(err error) error {
	if errors.Is(err, ErrUnauthorized) {
		c.mu.Lock()
		fn := c.onRefused
		c.mu.Unlock()
		if fn != nil {
			fn(err)
		}
	}
	return err
}

// NewClient returns a client for the controller at base ("https://host:port")
// that authenticates as id.
func NewClient(base string, id *Identity) *Client {
	c := &Client{base: base, id: id}
	c.http = c.newHTTP()
	return c
}

func (c *Client) newHTTP() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: c.id.TLSConfig(), MaxIdleConnsPerHost: 4,
		IdleConnTimeout: 90 * time.Second}}
}

func (c *Client) httpClient() *http.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.http
}

// Identity is the node's identity.
func (c *Client) Identity() *Identity { return c.id }

// maybeRenew renews the certificate when it is due, trying at most once a
// minute while renewal fails. A failure only matters once the certificate expires,
// which the next request then reports.
func (c *Client) maybeRenew(ctx context.Context) {
	leaf := c.id.Leaf()
	now := time.Now()
	c.mu.Lock()
	due := now.After(pki.RenewAt(leaf)) && !c.renewing && now.Sub(c.lastRenew) > time.Minute
	if due {
		c.renewing, c.lastRenew = true, now
	}
	c.mu.Unlock()
	if !due {
		return
	}
	err := c.Renew(ctx)
	c.mu.Lock()
	c.renewing = false
	if err == nil {
		c.lastRenew = time.Time{}
	}
	c.mu.Unlock()
}

// Renew gets a new certificate for the node now. New connections use it;
// the old one stays valid until it expires.
func (c *Client) Renew(ctx context.Context) error {
	keyPEM, csrPEM, err := pki.NewKeyAndCSR(c.id.Name())
	if err != nil {
		return err
	}
	var out CertReply
	if err := c.send(ctx, http.MethodPost, PathRenew, RenewRequest{CSR: string(csrPEM)}, &out); err != nil {
		return fmt.Errorf("renew the node certificate: %w", err)
	}
	if err := c.id.set(keyPEM, []byte(out.Certificate)); err != nil {
		return fmt.Errorf("renew the node certificate: %w", err)
	}
	// Connections made with the old certificate are not reused.
	c.mu.Lock()
	old := c.http
	c.http = c.newHTTP()
	c.mu.Unlock()
	old.CloseIdleConnections()
	return nil
}

// SetNodeID sets the identity sent after registration.
func (c *Client) SetNodeID(id string) { c.nodeID = id }

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	c.maybeRenew(ctx)
	return c.send(ctx, method, path, in, out)
}

func (c *Client) send(ctx context.Context, method, path string, in, out any) error {
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
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := checkStatus(resp); err != nil {
		return c.refused(err)
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
	c.maybeRenew(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+PathBlobs+sha, nil)
	if err != nil {
		return nil, err
	}
	c.auth(req)
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, err
	}
	if err := checkStatus(resp); err != nil {
		resp.Body.Close()
		return nil, c.refused(err)
	}
	return resp.Body, nil
}
