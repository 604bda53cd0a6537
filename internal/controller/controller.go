// Package controller wires the controller: the store, the service layer, the
// EC2 and native APIs on the API listener, and the node protocol on its own
// listener. It is a library: New(cfg) then Run(ctx); tests run it in-process
// and wait on Ready().
package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/clipper-cloud/clipper/internal/api"
	"github.com/clipper-cloud/clipper/internal/ec2"
	"github.com/clipper-cloud/clipper/internal/image"
	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/pki"
	"github.com/clipper-cloud/clipper/internal/service"
	"github.com/clipper-cloud/clipper/internal/store/sqlite"
)

// Config configures a controller.
type Config struct {
	DataDir    string
	Listen     string // EC2 and native API address, "127.0.0.1:8773"
	NodeListen string // node protocol address; "" is the API port + 1
	// NodeSANs are extra host names and addresses for the node listener's
	// certificate (nodes check the CA, not the name; other clients may).
	NodeSANs []string
	// NodeCertTTL is the lifetime of node certificates (default 30 days).
	NodeCertTTL time.Duration
	Service     service.Config
	Logger      *slog.Logger
}

// Controller is a running controller.
type Controller struct {
	cfg       Config
	log       *slog.Logger
	st        *sqlite.Store
	svc       *service.Service
	hub       *hub
	apiLn     net.Listener
	nodeLn    net.Listener
	key       model.AccessKey
	ca        *pki.CA
	tokenMu   sync.Mutex
	joinToken pki.Token // the one in DATA-DIR/join-token
	nodeTLS   *tls.Config
	apiMux    http.Handler
	nodeMux   http.Handler
	ready     chan struct{}
	closeOnce sync.Once
}

// New opens the store, creates the admin credentials at first start and
// binds both listeners (so the addresses are known before Run).
func New(ctx context.Context, cfg Config) (*Controller, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := prepareDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	st, err := sqlite.Open(ctx, filepath.Join(cfg.DataDir, "clipper.db"))
	if err != nil {
		return nil, err
	}
	c := &Controller{cfg: cfg, log: cfg.Logger.With("component", "controller"), st: st, hub: newHub(), ready: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			c.close()
		}
	}()
	blobs, err := image.NewBlobs(filepath.Join(cfg.DataDir, "blobs"))
	if err != nil {
		return nil, err
	}
	if c.svc, err = service.New(st, cfg.Service, blobs, c.hub, c.log); err != nil {
		return nil, err
	}
	if c.key, err = c.svc.EnsureAdmin(ctx); err != nil {
		return nil, fmt.Errorf("admin credentials: %w", err)
	}
	if c.ca, err = pki.OpenCA(filepath.Join(cfg.DataDir, "pki")); err != nil {
		return nil, err
	}
	if c.joinToken, err = c.ca.EnsureTokenFile(filepath.Join(cfg.DataDir, "join-token")); err != nil {
		return nil, fmt.Errorf("join token: %w", err)
	}
	// node-token held the shared node secret before join tokens; it now
	// holds the join token so that existing --token-file scripts work.
	if err := writeFileAtomic(filepath.Join(cfg.DataDir, "node-token"), []byte(c.joinToken.String()+"\n"), 0o600); err != nil {
		return nil, err
	}
	if c.apiLn, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	nodeAddr := cfg.NodeListen
	if nodeAddr == "" {
		host, port, _ := net.SplitHostPort(c.apiLn.Addr().String())
		nodeAddr = net.JoinHostPort(host, fmt.Sprint(atoiOr(port)+1))
	}
	if c.nodeLn, err = net.Listen("tcp", nodeAddr); err != nil {
		return nil, fmt.Errorf("listen %s (node protocol): %w", nodeAddr, err)
	}
	if err := c.setupNodeTLS(); err != nil {
		return nil, err
	}
	c.apiHandler(blobs)
	ok = true
	return c, nil
}

// prepareDataDir makes the data directory private: the database holds the
// admin secret in the clear (SigV4 needs it); the store keeps its own files
// 0600 as well. A previous run's aws.env is removed: it is written again only once the
// API answers, so its presence means "ready".
func prepareDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if err := os.Remove(filepath.Join(dir, "aws.env")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("data dir: %w", err)
	}
	return nil
}

func atoiOr(s string) int {
	n := 0
	fmt.Sscan(s, &n)
	return n
}

func (c *Controller) apiHandler(blobs *image.Blobs) {
	auth := &sigAuth{svc: c.svc, region: c.cfg.Service.Region}
	e := ec2.New(c.svc, auth, c.log.With("component", "ec2"))
	e.Endpoint = c.APIURL()
	a := api.New(c.svc, c.st, blobs, auth, c.log.With("component", "api"))
	mux := http.NewServeMux()
	mux.Handle(api.Prefix, a)
	mux.Handle("/", e)
	c.apiMux = mux
	a.EnableJoining(joining{c})
	c.nodeMux = (&nodeServer{svc: c.svc, blobs: blobs, hub: c.hub, ca: c.ca, certTTL: c.cfg.NodeCertTTL,
		log: c.log.With("component", "nodeserver")}).handler()
}

// Service exposes the service layer (in-process tests and benchmarks).
func (c *Controller) Service() *service.Service { return c.svc }

// APIURL is the EC2 endpoint URL.
func (c *Controller) APIURL() string { return "http://" + c.apiLn.Addr().String() }

// NodeURL is the node protocol URL.
func (c *Controller) NodeURL() string { return "https://" + c.nodeLn.Addr().String() }

// JoinToken is the join token in DATA-DIR/join-token (it does not expire).
func (c *Controller) JoinToken() string {
	c.tokenMu.Lock()
	defer c.tokenMu.Unlock()
	return c.joinToken.String()
}

func (c *Controller) fileTokenID() string {
	c.tokenMu.Lock()
	defer c.tokenMu.Unlock()
	return c.joinToken.ID
}

func (c *Controller) setFileToken(t pki.Token) {
	c.tokenMu.Lock()
	defer c.tokenMu.Unlock()
	c.joinToken = t
}

// CA is the controller's certificate authority.
func (c *Controller) CA() *pki.CA { return c.ca }

// Credentials is the admin access key.
func (c *Controller) Credentials() model.AccessKey { return c.key }

// Ready is closed once the API answers and aws.env is written.
func (c *Controller) Ready() <-chan struct{} { return c.ready }

// Run serves until ctx ends, then shuts down gracefully.
func (c *Controller) Run(ctx context.Context) error {
	defer c.close()
	apiSrv := &http.Server{Handler: c.apiMux, ReadHeaderTimeout: 10 * time.Second}
	nodeSrv := &http.Server{Handler: c.nodeMux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(c.log.With("component", "nodeserver").Handler(), slog.LevelInfo)}
	errc := make(chan error, 2)
	go func() { errc <- apiSrv.Serve(c.apiLn) }()
	go func() { errc <- nodeSrv.Serve(tls.NewListener(c.nodeLn, c.nodeTLS)) }()
	loopCtx, stopLoops := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		c.every(loopCtx, time.Minute, "purge", func(ctx context.Context) error { _, err := c.svc.Purge(ctx); return err })
	}()
	go func() {
		defer wg.Done()
		c.every(loopCtx, service.HealthCheckInterval, "node health", func(ctx context.Context) error { _, err := c.svc.MarkDownNodes(ctx); return err })
	}()
	if err := c.announce(ctx); err != nil {
		stopLoops()
		wg.Wait()
		return err
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	stopLoops()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	// Long polls end at once: shutdown waits for active requests.
	nodeSrv.Close()
	apiSrv.Shutdown(sctx)
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	c.log.Info("controller stopped")
	return err
}

// announce waits until the API answers, then writes aws.env and signals Ready.
func (c *Controller) announce(ctx context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := client.Get(c.APIURL() + "/?Action=DescribeRegions")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := WriteAWSEnv(filepath.Join(c.cfg.DataDir, "aws.env"), c.APIURL(), c.key, c.cfg.Service.Region); err != nil {
		return err
	}
	c.log.Info("controller ready", "api", c.APIURL(), "node_api", c.NodeURL(), "region", c.cfg.Service.Region,
		"aws_env", filepath.Join(c.cfg.DataDir, "aws.env"), "join_token", filepath.Join(c.cfg.DataDir, "join-token"))
	close(c.ready)
	return nil
}

func (c *Controller) every(ctx context.Context, d time.Duration, what string, fn func(context.Context) error) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				c.log.Error("background task failed", "task", what, "error", err)
			}
		}
	}
}

func (c *Controller) close() {
	c.closeOnce.Do(func() {
		if c.apiLn != nil {
			c.apiLn.Close()
		}
		if c.nodeLn != nil {
			c.nodeLn.Close()
		}
		c.st.Close()
	})
}

// WriteAWSEnv writes the shell file that points the AWS CLI and SDKs at a
// Clipper endpoint. AWS CLI versions before 2.13 ignore AWS_ENDPOINT_URL, so
// the file also defines an aws function that passes --endpoint-url.
func WriteAWSEnv(path, endpoint string, key model.AccessKey, region string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Clipper credentials for the AWS CLI and SDKs. Use: . %s\n", path)
	fmt.Fprintf(&b, "export AWS_ENDPOINT_URL=%s\n", endpoint)
	fmt.Fprintf(&b, "export AWS_ACCESS_KEY_ID=%s\n", key.ID)
	fmt.Fprintf(&b, "export AWS_SECRET_ACCESS_KEY=%s\n", key.Secret)
	fmt.Fprintf(&b, "export AWS_DEFAULT_REGION=%s\n", region)
	fmt.Fprintf(&b, "export AWS_REGION=%s\n", region)
	b.WriteString("export AWS_EC2_METADATA_DISABLED=true\nexport AWS_PAGER=\n")
	b.WriteString(`# AWS CLI < 2.13 does not read AWS_ENDPOINT_URL; pass it explicitly.
aws() {
  case " $* " in
    *" --endpoint-url"*) command aws "$@" ;;
    *) command aws --endpoint-url "$AWS_ENDPOINT_URL" "$@" ;;
  esac
}
`)
	return writeFileAtomic(path, []byte(b.String()), 0o600)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
