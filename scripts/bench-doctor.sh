#!/usr/bin/env bash
# Benchmarks `clipper doctor path` against tracepath on the test topologies
# (client - r1 - r2 - server in network namespaces, and one with four
# routers): time to verdict and probes sent per topology, tracepath's time,
# pmtu and probes (datagrams it sent, counted by nft: tracepath prints no
# count) on the same topology. Needs root. tracepath takes ~90 s on each
# black-holed topology, so the whole run takes about 12 minutes.
#
#   scripts/bench-doctor.sh                 # every topology, 3 runs each
#   BENCH='BlackHole$' COUNT=5 scripts/bench-doctor.sh
#
# With CLIPPER_BIN set (as `make bench` does) the real binary is measured;
# otherwise the test binary runs the same code.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
if [ "$(id -u)" -ne 0 ]; then
  echo "bench-doctor: needs root (network namespaces, raw sockets)" >&2
  exit 1
fi
command -v tracepath >/dev/null || { echo "bench-doctor: tracepath missing (iputils-tracepath)" >&2; exit 1; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
go test -run '^$' -bench "BenchmarkDoctor${BENCH:-}" -benchtime "${COUNT:-3}x" -timeout 60m \
  ./internal/doctor/ | tee "$out"
echo
echo "topology          doctor s/verdict  (with TLS)  probes  mtu   | tracepath s  pmtu  probes"
awk '/^BenchmarkDoctor/ {
  name=$1; sub(/^BenchmarkDoctor/, "", name); sub(/-[0-9]+$/, "", name)
  for (i = 3; i < NF; i++) m[$(i+1)] = $i
  printf "%-17s %16s  %10s  %6s  %4s  | %11s  %4s  %6s\n", name, m["s/verdict"], m["s/with-tls"], m["probes/op"], m["mtu"], m["tracepath-s"], m["tracepath-pmtu"], m["tracepath-probes"]
  delete m
}' "$out"
