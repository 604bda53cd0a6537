package ec2

import (
	"context"
	"encoding/xml"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/image"
	"github.com/clipper-cloud/clipper/internal/service"
	"github.com/clipper-cloud/clipper/internal/store/sqlite"
)

// unitAuth accepts every request as the given account (unit tests only:
// the real SigV4 path is covered by the in-process and e2e tests).
type unitAuth struct{ account string }

func (a unitAuth) Authenticate(r *http.Request, body []byte) (service.Caller, error) {
	return service.Caller{AccountID: a.account}, nil
}

func newUnitHandler(t testing.TB) *Handler {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	blobs, err := image.NewBlobs(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := service.New(st, service.DefaultConfig(), blobs, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	key, err := svc.EnsureAdmin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return New(svc, unitAuth{key.AccountID}, log)
}

// FuzzRequest drives raw query strings through the whole request pipeline:
// no panic, no 5xx, and every failure is an EC2 error document.
func FuzzRequest(f *testing.F) {
	for _, s := range []string{
		"Action=DescribeInstances&Version=2016-11-15",
		"Action=DescribeInstances&InstanceId.1=i-0123456789abcdef0",
		"Action=DescribeInstances&Filter.1.Name=instance-state-name&Filter.1.Value.1=running&MaxResults=5",
		"Action=DescribeInstances&MaxResults=5&NextToken=%21%21",
		"Action=RunInstances&ImageId=ami-12345678&MinCount=1&MaxCount=1&UserData=aGVsbG8=",
		"Action=RunInstances&ImageId=ami-1&MinCount=x&MaxCount=1",
		"Action=CreateKeyPair&KeyName=k&KeyType=ed25519",
		"Action=ImportKeyPair&KeyName=k&PublicKeyMaterial=c3NoLXJzYSBBQUFB",
		"Action=CreateTags&ResourceId.1=i-0123456789abcdef0&Tag.1.Key=Name&Tag.1.Value=x",
		"Action=DeleteTags&ResourceId.1=ami-12345678&Tag.1.Key=a",
		"Action=DescribeTags&Filter.1.Name=key&Filter.1.Value.1=N*",
		"Action=DescribeImages&Owner.1=self&ImageId.1=ami-12345678",
		"Action=RegisterImage&Name=abc&ImageLocation=sha256:00",
		"Action=RegisterImage&Name=abc&ImageLocation=sha256:" + strings.Repeat("ab", 32),
		"Action=StopInstances&InstanceId.1=i-1&Force=true",
		"Action=GetConsoleOutput&InstanceId=i-0123456789abcdef0",
		"Action=DescribeInstanceTypes&InstanceType.1=t3.micro",
		"Action=DescribeAvailabilityZones&ZoneName.1=nowhere",
		"Action=DescribeAccountAttributes&AttributeName.1=default-vpc",
		"Action=DescribeRegions&DryRun=true",
		"Action=CreateVpc&CidrBlock=10.0.0.0/16",
		"Action=CreateSecurityGroup&GroupName=web&GroupDescription=w",
		"Action=AuthorizeSecurityGroupIngress&GroupName=default&IpPermissions.1.IpProtocol=tcp&IpPermissions.1.FromPort=80&IpPermissions.1.ToPort=80&IpPermissions.1.IpRanges.1.CidrIp=0.0.0.0/0",
		"Action=RevokeSecurityGroupEgress&GroupName=default&IpPermissions.1.IpProtocol=-1&IpPermissions.1.IpRanges.1.CidrIp=0.0.0.0/0",
		"Action=DescribeSecurityGroups&Filter.1.Name=ip-permission.from-port&Filter.1.Value.1=22",
		"Action=DescribeSecurityGroupRules&SecurityGroupRuleId.1=sgr-1",
		"Action=DescribeVpcs&Filter.1.Name=is-default&Filter.1.Value.1=true",
		"Action=DescribeSubnets&SubnetId.1=subnet-1",
		"Action=ModifyInstanceAttribute&InstanceId=i-0123456789abcdef0&GroupId.1=sg-1",
		"Action=DescribeInstanceAttribute&InstanceId=i-0123456789abcdef0&Attribute=userData",
		"Action=ModifyInstanceMetadataOptions&InstanceId=i-0123456789abcdef0&HttpTokens=sometimes",
		"Action=RunInstances&ImageId=ami-12345678&MinCount=1&MaxCount=1&NetworkInterface.1.DeviceIndex=1",
		"Action=Frobnicate",
		"Action=DescribeInstances&Bogus=1",
		"InstanceId.1=i-1",
		"Action=DescribeInstances&InstanceId.1.X=1",
	} {
		f.Add(s)
	}
	h := newUnitHandler(f)
	f.Fuzz(func(t *testing.T, raw string) {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			var r *http.Request
			if method == http.MethodGet {
				r = httptest.NewRequest(method, "/", nil)
				r.URL.RawQuery = raw
			} else {
				r = httptest.NewRequest(method, "/", strings.NewReader(raw))
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
			}
			w := httptest.NewRecorder()
			done := make(chan struct{})
			go func() { defer close(done); h.ServeHTTP(w, r) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("%s %q: no answer within 10 s", method, raw)
			}
			body := w.Body.String()
			switch {
			case w.Code == http.StatusOK:
				if !strings.Contains(body, "<requestId>") {
					t.Fatalf("%s %q: 200 without requestId: %s", method, raw, body)
				}
			case w.Code >= 500 && !strings.Contains(body, "InsufficientInstanceCapacity"):
				t.Fatalf("%s %q: status %d: %s", method, raw, w.Code, body)
			default:
				var e errorResponse
				if err := xml.Unmarshal(w.Body.Bytes(), &e); err != nil || len(e.Errors) != 1 || e.Errors[0].Code == "" || e.RequestID == "" {
					t.Fatalf("%s %q: status %d, not an EC2 error: %s", method, raw, w.Code, body)
				}
			}
		}
	})
}
