#!/usr/bin/env bash
# `make bench`: runs the benchmarks and writes docs/BENCHMARKS.md.
# Everything runs on this machine, on loopback, bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/BENCHMARKS.md
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== rotation: Workload API push -> files on disk" >&2
go test -run '^$' -bench 'BenchmarkPushToDisk' -benchtime "${PUSH_ROTATIONS:-300}x" -count 1 ./pkg/rotation | tee "$tmp/push.txt" >&2
echo "== atomicdir: atomicdir.Writer.Write (3 files)" >&2
go test -run '^$' -bench 'BenchmarkWriterWrite' -benchtime 2s -count 1 ./pkg/atomicdir | tee "$tmp/dirwriter.txt" >&2
echo "== idle agent" >&2
IDLE_SECONDS=${IDLE_SECONDS:-60} ./scripts/idle.sh | tee "$tmp/idle.md" >&2
echo "== redis migration: rollback D -> B under a Celery worker (examples/redis)" >&2
FLEETTEST_RACE=0 FLEETTEST_ROLLBACK_MD="$tmp/rollback.md" \
  go test -count 1 -run '^TestCeleryAcrossTheMigration$' ./examples/redis >&2
echo "== fd flood: metrics_listen and the admin socket held at their caps (bench/fdflood)" >&2
FLEETTEST_RACE=0 go test -run '^$' -bench 'BenchmarkFDFlood' -benchtime "${FDFLOOD_REQUESTS:-300}x" -count 1 ./bench/fdflood | tee "$tmp/fdflood.txt" >&2

proxy_md=""
if [ -n "${SKIP_PROXY:-}" ] && [ -f docs/BENCHMARKS-proxy.md ]; then
  proxy_md="## mTLS proxy pair vs direct loopback (from an earlier run of bench/proxy/run.sh)
$(tail -n +2 docs/BENCHMARKS-proxy.md)"
elif [ -z "${SKIP_PROXY:-}" ]; then
  # iperf3 and wrk are the independent load generators for the proxy runs.
  if ! command -v iperf3 >/dev/null || ! command -v wrk >/dev/null; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq iperf3 wrk >/dev/null
  fi
  echo "== proxy (bench/proxy/run.sh -> docs/BENCHMARKS-proxy.md)" >&2
  # GHOSTUNNEL=/path/to/ghostunnel adds a reference pair measured in the same run.
  bench/proxy/run.sh ${GHOSTUNNEL:+-ghostunnel "$GHOSTUNNEL"} >&2
  proxy_md="## mTLS proxy pair vs direct loopback (same run; also in BENCHMARKS-proxy.md)
$(tail -n +2 docs/BENCHMARKS-proxy.md)"
fi

# Pull "name value unit" metric pairs out of a go test -bench line.
metric() { grep -E "^$2" "$1" | head -1 | awk -v u="$3" '{for (i=2;i<NF;i++) if ($(i+1)==u) print $i}'; }

{
  echo "# Benchmarks"
  echo
  echo "Measured by \`make bench\` on $(date -u +%Y-%m-%d): $(nproc) cores, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//'), $(go version | awk '{print $3}')."
  echo "Load average (1/5/15 min) when written: $(cut -d' ' -f1-3 /proc/loadavg). Rerun \`make bench\` for your own numbers."
  echo
  echo "## Rotation: Workload API push to files on disk"
  echo
  echo "\`BenchmarkPushToDisk\` (pkg/rotation): the dev Workload API pushes a new SVID"
  echo "(\`RotateSVIDs\`), and the clock stops when every file of the output"
  echo "(cert, key, bundle) is on disk through the symlink swap. The debounce is"
  echo "leading-edge (a push is written at once; pushes within the following 100 ms"
  echo "are coalesced into one trailing write), so the default adds nothing to an"
  echo "isolated rotation; rotations are spaced just over the debounce here, while"
  echo "SPIRE's are tens of minutes apart."
  echo
  echo "| metric | value | target |"
  echo "| --- | --- | --- |"
  echo "| p50 push → disk, debounce 0 | $(metric "$tmp/push.txt" 'BenchmarkPushToDisk/debounce=0' p50-ms) ms | |"
  echo "| p99 push → disk, debounce 0 | $(metric "$tmp/push.txt" 'BenchmarkPushToDisk/debounce=0' p99-ms) ms | < 20 ms |"
  echo "| p50 push → disk, default debounce (100 ms) | $(metric "$tmp/push.txt" 'BenchmarkPushToDisk/debounce=100ms' p50-ms) ms | |"
  echo "| p99 push → disk, default debounce (100 ms) | $(metric "$tmp/push.txt" 'BenchmarkPushToDisk/debounce=100ms' p99-ms) ms | < 20 ms |"
  echo "| atomicdir.Writer.Write, 3 files (6 fsyncs) | $(metric "$tmp/dirwriter.txt" BenchmarkWriterWrite ns/op) ns/op | |"
  echo
  echo "## Idle agent"
  echo
  echo "\`scripts/idle.sh\`: the real binary with two outputs (X.509 and JWT), SVIDs"
  echo "with a 1 h TTL so nothing rotates while measuring. CPU ticks come from"
  echo "/proc/PID/stat; any tick would mean polling."
  echo
  echo "| metric | value | target |"
  echo "| --- | --- | --- |"
  cat "$tmp/idle.md"
  echo
  echo "## Redis migration: rollback D → B under a Celery worker"
  echo
  echo "\`TestCeleryAcrossTheMigration\` (examples/redis), built without the race"
  echo "detector: a real redis-server in phase D (plaintext port closed, password"
  echo "cleared) with a Celery worker on rediss:// (\`celery_worker.py\`), rolled back"
  echo "with \`identity-agent redis transition rollback --confirm\` twice (D → C"
  echo "reopens the plaintext port and sets the password from its file, C → B)."
  echo "The second row runs until a new \`celery_producer.py\` process (about 1 s of"
  echo "Python start-up) has a task completed by the worker, which never restarted."
  echo
  echo "| metric | value | target |"
  echo "| --- | --- | --- |"
  cat "$tmp/rollback.md"
  echo
  echo "## File-descriptor flood: metrics_listen and the admin socket at their caps"
  echo
  echo "\`BenchmarkFDFlood\` (bench/fdflood), built without the race detector: the"
  echo "real binary under \`prlimit --nofile=1024:1024\` with one server-mode proxy,"
  echo "\`metrics_listen\` and its admin socket. Each op is one authorized request on a"
  echo "new mTLS connection through the proxy; every tenth op also fetches \`status\`"
  echo "from the admin socket. The flood column runs with 1,040 idle connections each"
  echo "on \`metrics_listen\` and on the admin socket, every one closed replaced at once"
  echo "(issue 18 found 0 of 20 requests answered and status UNKNOWN under such a"
  echo "flood before the listeners were capped)."
  echo
  echo "| metric | unattacked | 1,040 idle connections on each | target |"
  echo "| --- | --- | --- | --- |"
  echo "| authorized proxy requests answered | $(metric "$tmp/fdflood.txt" 'BenchmarkFDFlood/baseline' proxy-ok-%) % | $(metric "$tmp/fdflood.txt" 'BenchmarkFDFlood/flood' proxy-ok-%) % | 100 % |"
  echo "| proxy request, mean (connect + handshake + round trip) | $(metric "$tmp/fdflood.txt" 'BenchmarkFDFlood/baseline' proxy-ms) ms | $(metric "$tmp/fdflood.txt" 'BenchmarkFDFlood/flood' proxy-ms) ms | |"
  echo "| status answered | $(metric "$tmp/fdflood.txt" 'BenchmarkFDFlood/baseline' status-ok-%) % | $(metric "$tmp/fdflood.txt" 'BenchmarkFDFlood/flood' status-ok-%) % | 100 % |"
  echo "| status, mean | $(metric "$tmp/fdflood.txt" 'BenchmarkFDFlood/baseline' status-ms) ms | $(metric "$tmp/fdflood.txt" 'BenchmarkFDFlood/flood' status-ms) ms | < 5 s (status --timeout) |"
  if [ -n "$proxy_md" ]; then
    echo
    echo "$proxy_md"
  fi
  echo
  echo "## Raw output"
  echo
  echo '```'
  grep -hE '^(Benchmark|goos|goarch|cpu)' "$tmp/push.txt" "$tmp/dirwriter.txt" "$tmp/fdflood.txt" | sort -u
  echo '```'
} >"$out"
echo "wrote $out" >&2
