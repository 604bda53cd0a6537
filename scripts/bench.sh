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
echo
echo "== scheduler: 10,000 instances on 1,000 nodes through RunInstances (real store), and SigV4"
go test -run '^$' -bench 'BenchmarkSchedule' -benchtime 1x ./internal/service/ | grep -E '^Benchmark'
go test -run '^$' -bench 'BenchmarkVerify' ./internal/sigv4/ | grep -E '^Benchmark'
echo
echo "== security groups: SetGroups time; iperf3 and new connections/s between two namespace instances"
echo "   (10 vs 1,000 CIDR rules, none matching but the last; vs a bare Linux bridge; median of 5)"
go test -run '^$' -bench 'BenchmarkGroupApply' -benchtime 1s ./internal/network/ | grep -E '^(Benchmark|BUG)'
go test -run '^$' -bench 'BenchmarkThroughput|BenchmarkConnRate' -benchtime 1x -timeout 10m ./internal/network/ | grep -E '^(Benchmark|BUG)'
echo "== overlay: iperf3 between namespace instances on two nodes over VXLAN vs the same two routed over the bare underlay (median of 5)"
go test -run '^$' -bench 'BenchmarkOverlayThroughput' -benchtime 1x -timeout 5m ./internal/network/ | grep -E '^(Benchmark|BUG)'
echo "== elastic IP move: Attach with the new PublicIP -> first TCP connect from outside reaches the new instance (20 moves)"
go test -run '^$' -bench 'BenchmarkEIPMove' -benchtime 20x ./internal/network/ | grep -E '^(Benchmark|BUG)'
echo
echo "== boot to CLIPPER-GUEST-READY: clipper vs bare qemu (median of 5 each)"
go test -run '^$' -bench 'BenchmarkBootToReady' -benchtime 1x -timeout 30m ./test/e2e/ | grep -E '^Benchmark'
if [ -z "${SKIP_DOCTOR:-}" ]; then
  echo
  echo "== clipper doctor vs tracepath"
  ./scripts/bench-doctor.sh
fi
