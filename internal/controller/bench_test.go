package controller_test

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/service"
	"github.com/clipper-cloud/clipper/internal/testutil/cloud"
)

// launchAndWait runs one instance through the EC2 API and returns the time
// until the controller records it running (watched in-process, so waiting costs
// no polling).
func launchAndWait(b *testing.B, c *cloud.Cloud, svc *service.Service, caller service.Caller, ami string) time.Duration {
	ctx := context.Background()
	start := time.Now()
	run, err := c.EC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if err != nil {
		b.Error(err)
		return 0
	}
	id := *run.Instances[0].InstanceId
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := svc.WaitInstance(wctx, caller, id, func(i model.Instance) bool { return i.State == model.StateRunning }); err != nil {
		b.Errorf("%s: %v", id, err)
		return 0
	}
	return time.Since(start)
}

func percentile(d []time.Duration, p float64) time.Duration {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[int(float64(len(d)-1)*p)]
}

// BenchmarkLaunchLatency: RunInstances -> running with the fake driver,
// 1,000 sequential launches per iteration; reports p50 and p99.
func BenchmarkLaunchLatency(b *testing.B) {
	c := cloud.Start(b, cloud.Options{Capacity: model.Capacity{VCPUs: 4096, MemoryMiB: 16 << 20, DiskMiB: 1 << 30}})
	ami := c.ImportImage(b, "bench")
	svc := c.Ctrl.Service()
	caller := service.Caller{AccountID: c.Ctrl.Credentials().AccountID}
	var all []time.Duration
	for b.Loop() {
		for range 1000 {
			all = append(all, launchAndWait(b, c, svc, caller, ami))
		}
	}
	b.ReportMetric(float64(percentile(all, 0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(percentile(all, 0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkLaunchThroughput: 100 concurrent clients each launch and wait;
// reports launches per second (time to running included).
func BenchmarkLaunchThroughput(b *testing.B) {
	c := cloud.Start(b, cloud.Options{Capacity: model.Capacity{VCPUs: 4096, MemoryMiB: 16 << 20, DiskMiB: 1 << 30}})
	ami := c.ImportImage(b, "bench")
	svc := c.Ctrl.Service()
	caller := service.Caller{AccountID: c.Ctrl.Credentials().AccountID}
	const clients, each = 100, 20
	var total time.Duration
	var lat []time.Duration
	var mu sync.Mutex
	for b.Loop() {
		start := time.Now()
		var wg sync.WaitGroup
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					d := launchAndWait(b, c, svc, caller, ami)
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		total += time.Since(start)
	}
	n := float64(len(lat))
	b.ReportMetric(n/total.Seconds(), "launches/s")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(0, "ns/op")
}
