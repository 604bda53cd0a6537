package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/clipper-cloud/clipper/internal/agent"
	"github.com/clipper-cloud/clipper/internal/compute"
	"github.com/clipper-cloud/clipper/internal/compute/fake"
	"github.com/clipper-cloud/clipper/internal/compute/qemu"
	"github.com/clipper-cloud/clipper/internal/controller"
	"github.com/clipper-cloud/clipper/internal/metadata"
	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/network"
	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/pki"
	"github.com/clipper-cloud/clipper/internal/service"
)

// serverFlags are the flags of the long-running commands.
type serverFlags struct {
	dataDir   string
	logLevel  string
	logFormat string
}

func (f *serverFlags) add(cmd *cobra.Command, defDir string) {
	cmd.Flags().StringVar(&f.dataDir, "data-dir", defDir, "directory for state (database, images, VMs)")
	cmd.Flags().StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	cmd.Flags().StringVar(&f.logFormat, "log-format", "text", "text or json")
}

func (f *serverFlags) logger(cmd *cobra.Command) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch f.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be text or json")
}

// controllerFlags configure the controller side.
type controllerFlags struct {
	listen        string
	nodeListen    string
	region        string
	zones         []string
	instanceTypes string
	vpcCIDR       string
	mtu           int
	overcommit    service.Overcommit
	publicPools   []string
	maxAddresses  int
	nodeSANs      []string
	nodeCertTTL   time.Duration
}

func (f *controllerFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.listen, "listen", "127.0.0.1:8773", "address of the EC2 API")
	cmd.Flags().StringVar(&f.nodeListen, "node-listen", "", "address of the node protocol (default: API port + 1)")
	cmd.Flags().StringSliceVar(&f.nodeSANs, "node-san", nil, "extra host names and addresses for the node listener's certificate")
	cmd.Flags().DurationVar(&f.nodeCertTTL, "node-cert-ttl", pki.DefaultNodeCertTTL, "lifetime of node certificates (nodes renew after two thirds)")
	cmd.Flags().StringVar(&f.region, "region", "clipper-1", "region name")
	cmd.Flags().StringSliceVar(&f.zones, "zones", nil, "availability zones (default: <region>a)")
	cmd.Flags().StringVar(&f.instanceTypes, "instance-types", "", "JSON file with the instance type table ([{\"name\",\"vcpus\",\"memory_mib\",\"disk_gib\"}])")
	cmd.Flags().StringVar(&f.vpcCIDR, "vpc-cidr", "172.31.0.0/16", "address range of default networks")
	cmd.Flags().IntVar(&f.mtu, "mtu", 1450, "MTU instances get by DHCP: the underlay MTU minus 50 for VXLAN")
	cmd.Flags().StringSliceVar(&f.publicPools, "public-pool", nil, "IPv4 prefixes elastic IPs and forwards are allocated from (repeatable)")
	cmd.Flags().IntVar(&f.maxAddresses, "max-addresses", service.DefaultConfig().MaxAddresses, "elastic IPs per account")
	def := service.DefaultConfig().Overcommit
	cmd.Flags().Float64Var(&f.overcommit.CPU, "overcommit-cpu", def.CPU, "vCPUs placed per host CPU")
	cmd.Flags().Float64Var(&f.overcommit.Memory, "overcommit-memory", def.Memory, "memory placed per MiB of host memory")
	cmd.Flags().Float64Var(&f.overcommit.Disk, "overcommit-disk", def.Disk, "disk placed per MiB of free host disk")
}

func (f *controllerFlags) config(dataDir string, log *slog.Logger) (controller.Config, error) {
	sc := service.DefaultConfig()
	sc.Region = f.region
	sc.Zones = f.zones
	if len(sc.Zones) == 0 {
		sc.Zones = []string{f.region + "a"}
	}
	if f.instanceTypes != "" {
		b, err := os.ReadFile(f.instanceTypes)
		if err != nil {
			return controller.Config{}, err
		}
		var types []model.InstanceType
		if err := json.Unmarshal(b, &types); err != nil {
			return controller.Config{}, fmt.Errorf("%s: %w", f.instanceTypes, err)
		}
		sc.InstanceTypes = types
		if len(types) > 0 {
			sc.DefaultType = types[0].Name
		}
	}
	p, err := netip.ParsePrefix(f.vpcCIDR)
	if err != nil || !p.Addr().Is4() || p.Bits() > 24 {
		return controller.Config{}, fmt.Errorf("--vpc-cidr must be an IPv4 prefix of /24 or larger")
	}
	sc.VPCCIDR = p
	sc.SubnetBits = min(p.Bits()+4, 28)
	sc.MTU = f.mtu
	if f.overcommit.CPU <= 0 || f.overcommit.Memory <= 0 || f.overcommit.Disk <= 0 {
		return controller.Config{}, fmt.Errorf("overcommit ratios must be positive")
	}
	sc.Overcommit = f.overcommit
	for _, s := range f.publicPools {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil || !p.Addr().Is4() {
			return controller.Config{}, fmt.Errorf("--public-pool %q: want an IPv4 prefix such as 198.51.100.0/24", s)
		}
		sc.PublicPools = append(sc.PublicPools, p.Masked())
	}
	if f.maxAddresses < 0 {
		return controller.Config{}, fmt.Errorf("--max-addresses must not be negative")
	}
	sc.MaxAddresses = f.maxAddresses
	return controller.Config{DataDir: dataDir, Listen: f.listen, NodeListen: f.nodeListen, NodeSANs: f.nodeSANs,
		NodeCertTTL: f.nodeCertTTL, Service: sc, Logger: log}, nil
}

// nodeFlags configure the node agent side.
type nodeFlags struct {
	name     string
	zone     string
	driver   string
	qemuPath string
	address  string
	// dnsUpstreams are the resolvers the node's DNS service forwards to
	// (nil: the host's resolv.conf).
	dnsUpstreams []string
}

func (f *nodeFlags) add(cmd *cobra.Command) {
	host, _ := os.Hostname()
	cmd.Flags().StringVar(&f.name, "name", host, "node name")
	cmd.Flags().StringVar(&f.zone, "zone", "", "availability zone of this node (default: the first zone)")
	cmd.Flags().StringVar(&f.driver, "driver", "qemu", "hypervisor driver: qemu or fake")
	cmd.Flags().StringVar(&f.qemuPath, "qemu", "qemu-system-x86_64", "QEMU binary (qemu driver)")
	cmd.Flags().StringVar(&f.address, "address", "", "address other nodes reach this node at")
	cmd.Flags().StringSliceVar(&f.dnsUpstreams, "dns-upstream", nil,
		"resolvers (ADDR[:PORT], repeatable) the instances' DNS service forwards other names to; "+
			"\"none\" for none (default: the nameservers of /etc/resolv.conf)")
}

// nodeParts is what a node agent drives: the hypervisor, the host's
// networking and the metadata service.
type nodeParts struct {
	driver   compute.Hypervisor
	network  agent.Network
	metadata agent.Metadata
	close    func()
}

// hypervisor builds the driver and the networking that goes with it. With
// the qemu driver the metadata service runs until close.
func (f *nodeFlags) hypervisor(dir string, id *nodeproto.Identity, log *slog.Logger) (nodeParts, error) {
	switch f.driver {
	case "fake":
		return nodeParts{driver: fake.New(), network: network.Noop{}, close: func() {}}, nil
	case "qemu":
		// Instances move between nodes over TLS, with the node's
		// certificate.
		creds := func() (qemu.MigrationTLS, error) {
			cert, key, ca, err := id.PEM()
			return qemu.MigrationTLS{Name: id.Name(), CertPEM: cert, KeyPEM: key, CAPEM: ca}, err
		}
		d, err := qemu.New(qemu.Config{StateDir: filepath.Join(dir, "vms"), QEMUPath: f.qemuPath, Logger: log,
			MigrationTLS: creds})
		if err != nil {
			return nodeParts{}, err
		}
		var opts []network.Option
		if ul, err := network.UnderlayAddr(f.address); err == nil {
			opts = append(opts, network.WithUnderlay(ul))
		} else if f.address != "" {
			log.Warn("--address is not an IP address: this node joins no overlay", "address", f.address)
		}
		if f.dnsUpstreams != nil {
			ups := []string{}
			for _, u := range f.dnsUpstreams {
				if u == "none" {
					continue
				}
				if _, err := netip.ParseAddr(u); err != nil {
					if _, err := netip.ParseAddrPort(u); err != nil {
						return nodeParts{}, fmt.Errorf("--dns-upstream %q: want ADDR or ADDR:PORT", u)
					}
				}
				ups = append(ups, u)
			}
			opts = append(opts, network.WithDNSUpstreams(ups))
		}
		n, err := network.New(log, opts...)
		if err != nil {
			return nodeParts{}, err
		}
		md := metadata.New(log)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := md.ListenAndServe(ctx); err != nil {
				log.Error("metadata service stopped", "error", err)
			}
		}()
		return nodeParts{driver: d, network: n, metadata: md, close: func() {
			cancel()
			<-done
			n.Close()
		}}, nil
	}
	return nodeParts{}, fmt.Errorf("--driver must be qemu or fake, not %q", f.driver)
}

func (f *nodeFlags) agent(client *nodeproto.Client, dir string, log *slog.Logger) (*agent.Agent, func(), error) {
	p, err := f.hypervisor(dir, client.Identity(), log)
	if err != nil {
		return nil, nil, err
	}
	closeNet := p.close
	a, err := agent.New(agent.Config{Client: client, DataDir: dir, Name: f.name, Zone: f.zone, Address: f.address,
		Driver: p.driver, Network: p.network, Metadata: p.metadata, Logger: log})
	if err != nil {
		closeNet()
		return nil, nil, err
	}
	return a, closeNet, nil
}

func newControllerCmd() *cobra.Command {
	var sf serverFlags
	var cf controllerFlags
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Run the controller: the EC2 API, the state store and the scheduler",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := sf.logger(cmd)
			if err != nil {
				return err
			}
			cfg, err := cf.config(sf.dataDir, log)
			if err != nil {
				return err
			}
			ctrl, err := controller.New(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return ctrl.Run(cmd.Context())
		},
	}
	sf.add(cmd, "/var/lib/clipper")
	cf.add(cmd)
	return cmd
}

func newNodeCmd() *cobra.Command {
	var sf serverFlags
	var nf nodeFlags
	var controllerURL, token, tokenFile string
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run a node agent that hosts VMs for a controller",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := sf.logger(cmd)
			if err != nil {
				return err
			}
			if controllerURL == "" {
				return errors.New("--controller is required")
			}
			if tokenFile != "" {
				b, err := os.ReadFile(tokenFile)
				if err != nil {
					return err
				}
				token = strings.TrimSpace(string(b))
			}
			base := nodeURL(controllerURL, log)
			id, err := nodeIdentity(cmd.Context(), base, token, nf.name, sf.dataDir, log)
			if err != nil {
				return err
			}
			// A refusal (revoked certificate) stops the node with the reason.
			ctx, cancel := context.WithCancelCause(cmd.Context())
			defer cancel(nil)
			client := nodeproto.NewClient(base, id)
			client.OnRefused(cancel)
			a, closeNet, err := nf.agent(client, sf.dataDir, log)
			if err != nil {
				return err
			}
			defer closeNet()
			err = a.Run(ctx)
			if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
				return cause
			}
			return err
		},
	}
	sf.add(cmd, "/var/lib/clipper/node")
	nf.add(cmd)
	cmd.Flags().StringVar(&controllerURL, "controller", "", "URL of the controller's node protocol (https://host:8774)")
	cmd.Flags().StringVar(&token, "token", "", "join token (first start only; later starts use the node certificate)")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "file holding the join token")
	cmd.AddCommand(newNodeRmCmd())
	return cmd
}

func newUpCmd() *cobra.Command {
	var sf serverFlags
	var cf controllerFlags
	var nf nodeFlags
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run an all-in-one cloud on this machine: a controller and a node agent",
		Long: `Run an all-in-one cloud: the controller and a node agent in one process, talking
over the node protocol like separate machines would. When the API answers,
DATA-DIR/aws.env holds the endpoint and credentials for the AWS CLI and SDKs.
Ctrl-C stops the cloud; running VMs keep running and are adopted again by the
next 'clipper up'.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := sf.logger(cmd)
			if err != nil {
				return err
			}
			cfg, err := cf.config(sf.dataDir, log)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			ctrl, err := controller.New(ctx, cfg)
			if err != nil {
				return err
			}
			client, err := ctrl.LocalNodeClient(nf.name)
			if err != nil {
				return err
			}
			a, closeNet, err := nf.agent(client, filepath.Join(sf.dataDir, "node"), log)
			if err != nil {
				return err
			}
			defer closeNet()
			errc := make(chan error, 2)
			go func() { errc <- ctrl.Run(ctx) }()
			go func() { errc <- a.Run(ctx) }()
			go func() {
				select {
				case <-ctrl.Ready():
					fmt.Fprintf(cmd.OutOrStdout(), "Clipper is up: EC2 API at %s\n  . %s/aws.env\n", ctrl.APIURL(), sf.dataDir)
				case <-ctx.Done():
				}
			}()
			first := <-errc
			cancel()
			second := <-errc
			if first != nil && !errors.Is(first, context.Canceled) {
				return first
			}
			if second != nil && !errors.Is(second, context.Canceled) {
				return second
			}
			return nil
		},
	}
	sf.add(cmd, "/var/lib/clipper")
	cf.add(cmd)
	nf.add(cmd)
	return cmd
}
