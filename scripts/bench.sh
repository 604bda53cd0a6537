#!/usr/bin/env bash
# make bench: the figures the issues name, on this machine.
#   control plane: RunInstances -> running with the fake driver (p50, p99 over
#     1,000 launches) and launches/s with 100 concurrent clients;
#   boot: RunInstances -> CLIPPER-GUEST-READY with the qemu driver next to a
#     bare qemu-system-x86_64 of the same guest (the ratio is Clipper's overhead);
#   scheduler placements/s, SigV4 verification cost;
#   security groups: nft apply time for 10 and 1,000 CIDR rules, and TCP
#     throughput and connection rate between two instances on one node
#     bridge with those rules, next to a bare Linux bridge;
#   elastic IP moves: the node's share alone, and AssociateAddress to the
#     first connection reaching a VM on the other node of a cluster;
#   live moves of a real VM between two nodes;
#   clipper doctor vs tracepath per topology (scripts/bench-doctor.sh).
# SKIP_DOCTOR=1 leaves out the doctor part (it takes ~12 minutes, mostly tracepath).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
echo "== machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "== $(qemu-system-x86_64 --version | head -1)"
echo
echo "== control plane (fake driver, real SQLite store, EC2 API over HTTP)"
go test -run '^$' -bench 'BenchmarkLaunch' -benchtime 1x ./internal/controller/ | grep -E '^Benchmark'
echo "   store: fsync'd writes from 50 goroutines, group-committed (ns per write)"
go test -run '^$' -bench 'BenchmarkConcurrentWrites' ./internal/store/sqlite/ | grep -E '^Benchmark'
echo
echo "== scheduler: 10,000 instances on 1,000 nodes through RunInstances (real store), and SigV4"
go test -run '^$' -bench 'BenchmarkSchedule' -benchtime 1x ./internal/service/ | grep -E '^Benchmark'
go test -run '^$' -bench 'BenchmarkVerify' ./internal/sigv4/ | grep -E '^Benchmark'
echo
echo "== security groups: SetGroups time; iperf3 and new connections/s between two namespace instances"
echo "   (10 vs 1,000 CIDR rules, none matching but the last; vs a bare Linux bridge; median of 5)"
go test -run '^$' -bench 'BenchmarkGroupApply' -benchtime 1s ./internal/network/ | grep -E '^(Benchmark|--- FAIL|FAIL|\s+\w+_test\.go:)'
go test -run '^$' -bench 'BenchmarkThroughput|BenchmarkConnRate' -benchtime 1x -timeout 10m ./internal/network/ | grep -E '^(Benchmark|--- FAIL|FAIL|\s+\w+_test\.go:)'
echo "== overlay: iperf3 between namespace instances on two nodes over VXLAN vs the same two routed over the bare underlay (median of 5)"
go test -run '^$' -bench 'BenchmarkOverlayThroughput' -benchtime 1x -timeout 5m ./internal/network/ | grep -E '^(Benchmark|--- FAIL|FAIL|\s+\w+_test\.go:)'
echo "== elastic IP move, node side only: the node's Attach with the new PublicIP -> first TCP connect from outside"
echo "   reaches the new instance, two namespace instances on one node, no controller (20 moves)"
go test -run '^$' -bench 'BenchmarkEIPMove$' -benchtime 20x ./internal/network/ | grep -E '^(Benchmark|--- FAIL|FAIL|\s+\w+_test\.go:)'
echo "== elastic IP move, end to end: AssociateAddress -> first TCP connect from the router namespace reaches the"
echo "   new instance, a real VM on the other node of a two-node cluster (10 moves; api-ms is the API call alone)"
go test -run '^$' -bench 'BenchmarkEIPMoveAcrossNodes' -benchtime 1x -timeout 10m ./test/e2e/ | grep -E '^(Benchmark|--- FAIL|FAIL|\s+\w+_test\.go:)'
echo "== live move: clipper instance move -> the VM runs on the other node of its zone and is gone from the first"
echo "   (a real 256 MiB VM moved 6 times; the first move also fetches the image to the node)"
go test -run '^$' -bench 'BenchmarkLiveMove' -benchtime 1x -timeout 10m ./test/e2e/ | grep -E '^(Benchmark|--- FAIL|FAIL|\s+\w+_test\.go:)'
echo
echo "== boot to CLIPPER-GUEST-READY: clipper vs bare qemu (median of 5 each)"
go test -run '^$' -bench 'BenchmarkBootToReady' -benchtime 1x -timeout 30m ./test/e2e/ | grep -E '^Benchmark'
if [ -z "${SKIP_DOCTOR:-}" ]; then
  echo
  echo "== clipper doctor vs tracepath"
  ./scripts/bench-doctor.sh
fi
