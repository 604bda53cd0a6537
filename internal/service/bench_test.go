package service

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/store"
	"github.com/clipper-cloud/clipper/internal/store/sqlite"
)

// BenchmarkSchedule places 10,000 instances on 1,000 registered nodes
// through RunInstances with the real SQLite store, in bursts of 500 (one
// transaction each), and reports placements per second.
func BenchmarkSchedule(b *testing.B) {
	ctx := context.Background()
	var total time.Duration
	placed := 0
	for b.Loop() {
		b.StopTimer()
		st, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "db"))
		if err != nil {
			b.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.VPCCIDR, cfg.SubnetBits = netip.MustParsePrefix("10.0.0.0/8"), 16
		manifest := []byte(`{"kernel":{"SHA256":"` + sha64("a") + `","Size":10}}`)
		svc, err := New(st, cfg, memBlobs{sha64("d"): manifest}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			b.Fatal(err)
		}
		key, err := svc.EnsureAdmin(ctx)
		if err != nil {
			b.Fatal(err)
		}
		c := Caller{AccountID: key.AccountID}
		for n := range 1000 {
			if _, err := svc.RegisterNode(ctx, nodeproto.Registration{Name: fmt.Sprintf("node%04d", n),
				Capacity: model.Capacity{VCPUs: 8, MemoryMiB: 32768, DiskMiB: 1 << 20}}); err != nil {
				b.Fatal(err)
			}
		}
		if err := st.Update(ctx, func(tx store.Tx) error { return tx.PutBlob(model.BlobRef{SHA256: sha64("a"), Size: 10}) }); err != nil {
			b.Fatal(err)
		}
		img, err := svc.RegisterImage(ctx, c, RegisterInput{Name: "bench", Location: ManifestPrefix + sha64("d")})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		for range 20 {
			res, err := svc.RunInstances(ctx, c, RunInput{ImageID: img.ID, InstanceType: "t3.micro", MinCount: 500, MaxCount: 500})
			if err != nil {
				b.Fatal(err)
			}
			placed += len(res.Instances)
		}
		total += time.Since(start)
		st.Close()
	}
	b.ReportMetric(float64(placed)/total.Seconds(), "placements/s")
	b.ReportMetric(0, "ns/op")
}
