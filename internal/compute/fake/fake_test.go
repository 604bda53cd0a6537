package fake

import (
	"context"
	"strings"
	"testing"

	"github.com/clipper-cloud/clipper/internal/compute"
	"github.com/clipper-cloud/clipper/internal/compute/computetest"
)

func TestConformance(t *testing.T) {
	computetest.Run(t, computetest.Harness{
		New:    func(t *testing.T) compute.Hypervisor { return New() },
		Reopen: func(t *testing.T, d compute.Hypervisor) compute.Hypervisor { return d },
		Spec: func(t *testing.T, id string) compute.Spec {
			return compute.Spec{ID: id, VCPUs: 1, MemoryMiB: 128, Kernel: "/boot/vmlinux"}
		},
		Ready: "CLIPPER-GUEST-READY",
	})
}

func TestInjectedFailure(t *testing.T) {
	d := New()
	ctx := context.Background()
	if err := d.Create(ctx, compute.Spec{ID: "i-1", VCPUs: 1, MemoryMiB: 64, Kernel: FailPrefix + "no such kernel"}); err != nil {
		t.Fatal(err)
	}
	err := d.Start(ctx, "i-1")
	if err == nil || !strings.Contains(err.Error(), "no such kernel") {
		t.Fatalf("Start: %v", err)
	}
	if st, _ := d.Status(ctx, "i-1"); st.State != compute.StateStopped || st.ExitReason == "" {
		t.Fatalf("after failed start: %+v", st)
	}
}
