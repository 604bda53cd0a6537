package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/testutil/netns"
)

// TestBridgedNetworkVM: the classic "bridge br0 onto eth0" setup, managed.
// The node's LAN is a bridge br0 (the node at 192.168.77.2) with a "LAN"
// namespace on it (its router, 192.168.77.1). `clipper network create`
// puts a network on br0; a real VM launched into its subnet with the AWS
// CLI gets a LAN address from the range by DHCP and the metadata service
// through the node, is reached from the LAN without NAT once its group
// allows it, and stays closed on other ports.
func TestBridgedNetworkVM(t *testing.T) {
	requireVMs(t)
	c := StartCloud(t)
	c.NS.IP("link", "add", "br0", "type", "bridge")
	c.NS.IP("link", "set", "br0", "up")
	c.NS.Addr("br0", "192.168.77.2/24")
	lan := netns.New(t, "lan")
	netns.Link(t, c.NS, "lan0", lan, "eth0")
	c.NS.IP("link", "set", "lan0", "master", "br0")
	lan.Addr("eth0", "192.168.77.1/24")

	ids := strings.Fields(c.Run(t, clipperBin, "network", "create", "--name", "lan", "--bridge", "br0",
		"--cidr", "192.168.77.0/24", "--gateway", "192.168.77.1", "--range", "192.168.77.100-192.168.77.109"))
	if len(ids) != 2 || !strings.HasPrefix(ids[0], "vpc-") || !strings.HasPrefix(ids[1], "subnet-") {
		t.Fatalf("network create printed %q", ids)
	}
	vpc, subnet := ids[0], ids[1]
	if ls := c.Run(t, clipperBin, "network", "ls"); !strings.Contains(ls, vpc) || !strings.Contains(ls, "br0") {
		t.Fatalf("network ls:\n%s", ls)
	}
	if got := c.AWS(t, "ec2", "describe-subnets", "--subnet-ids", subnet, "--query",
		"Subnets[0].[VpcId,CidrBlock,AvailableIpAddressCount]", "--output", "text"); got != vpc+"\t192.168.77.0/24\t10" {
		t.Fatalf("describe-subnets: %q", got)
	}
	sg := c.AWS(t, "ec2", "describe-security-groups", "--filters", "Name=vpc-id,Values="+vpc, "Name=group-name,Values=default",
		"--query", "SecurityGroups[0].GroupId", "--output", "text")
	c.AWS(t, "ec2", "authorize-security-group-ingress", "--group-id", sg, "--protocol", "tcp", "--port", "80", "--cidr", "192.168.77.0/24")

	ami := c.ImportGuest(t, "guest")
	id := c.AWS(t, "ec2", "run-instances", "--image-id", ami, "--subnet-id", subnet, "--query", "Instances[0].InstanceId", "--output", "text")
	ip := c.AWS(t, "ec2", "describe-instances", "--instance-ids", id, "--query", "Reservations[0].Instances[0].PrivateIpAddress", "--output", "text")
	if !strings.HasPrefix(ip, "192.168.77.10") {
		t.Fatalf("address %s is not from the range: %s", ip, c.AWS(t, "ec2", "describe-instances", "--instance-ids", id))
	}
	con := c.WaitConsole(t, id, "CLIPPER-INSTANCE-ID", 2*time.Minute)
	if !strings.Contains(con, "CLIPPER-NET ip="+ip+"/24 mtu=1500") || !strings.Contains(con, "CLIPPER-INSTANCE-ID "+id) {
		t.Fatalf("the guest's network and metadata:\n%s", con)
	}

	// From the LAN, straight to the instance: no NAT, the group decides.
	fromLAN := &Cloud{NS: lan}
	waitReach(t, fromLAN, ip, 80, true, time.Now())
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: lan.DialContext}}
	resp, err := hc.Get("http://" + ip + "/cgi-bin/who")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if who := strings.TrimSpace(string(body)); who != "clipper-guest "+id+" from 192.168.77.1" {
		t.Fatalf("from the LAN: %q", who)
	}
	if reach(fromLAN, ip, 22) {
		t.Fatal("port 22 is open from the LAN with a rule for port 80")
	}
	c.AWS(t, "ec2", "terminate-instances", "--instance-ids", id)
	c.AWS(t, "ec2", "wait", "instance-terminated", "--instance-ids", id)
	c.Run(t, clipperBin, "network", "rm", vpc)
}
