#!/usr/bin/env bash
# Benchmarks pkg/tlsproxy against direct loopback on this machine and writes
# docs/BENCHMARKS-proxy.md. Loopback only; bounded to a few minutes.
# Usage: bench/proxy/run.sh [extra proxybench flags, e.g. -duration 5s]
# `bench/proxy/run.sh -only attack,samesource,rotation` refreshes only the section on
# idle attackers and CA rotations (about a minute).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
for tool in iperf3 wrk go; do
	command -v "$tool" >/dev/null || { echo "run.sh: $tool is required" >&2; exit 1; }
done
bin="$(mktemp -d)/proxybench"
trap 'rm -rf "$(dirname "$bin")"' EXIT
go build -o "$bin" ./bench/proxy
mkdir -p docs
timeout 900 "$bin" -out docs/BENCHMARKS-proxy.md "$@"
