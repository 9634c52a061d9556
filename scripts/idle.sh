#!/usr/bin/env bash
# Measures the agent's idle cost: RSS and CPU ticks of a running agent with
# two outputs and SVIDs that do not rotate during the measurement (TTL 1h),
# so any CPU used would be polling. Prints markdown rows.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-bin/identity-agent}
secs=${IDLE_SECONDS:-30}
work=$(mktemp -d /tmp/ia-idle.XXXXXX)
cleanup() { kill "$agent" "$dev" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
"$bin" dev --socket "$work/api.sock" --spiffe-id spiffe://example.org/a --ttl 1h >"$work/dev.log" 2>&1 &
dev=$!
cat >"$work/agent.yaml" <<YAML
workload_api: {socket: "unix://$work/api.sock"}
admin: {socket: "$work/admin.sock"}
outputs:
  - {name: a, dir: "$work/a", cert_file: svid.pem, key_file: key.pem, bundle_file: bundle.pem}
  - {name: b, dir: "$work/b", bundle_file: bundle.pem, jwt: [{audience: [x], file: t.jwt}], jwt_bundle_file: jwks.json}
YAML
"$bin" run --config "$work/agent.yaml" >"$work/agent.log" 2>&1 &
agent=$!
for _ in $(seq 100); do [ -e "$work/a/svid.pem" ] && break; sleep 0.1; done
[ -e "$work/a/svid.pem" ] || { echo "agent did not write files" >&2; cat "$work/agent.log" >&2; exit 1; }
sleep 3 # let start-up settle
ticks() { awk '{print $14+$15}' "/proc/$agent/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks); sleep "$secs"; t1=$(ticks)
rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$agent/status")
hwm_kib=$(awk '/VmHWM/ {print $2}' "/proc/$agent/status")
cpu_ms=$(( (t1 - t0) * 1000 / hz ))
awk -v k="$rss_kib" 'BEGIN { printf "| idle RSS (VmRSS) | %.1f MiB | < 25 MiB |\n", k/1024 }'
awk -v k="$hwm_kib" 'BEGIN { printf "| peak RSS (VmHWM) | %.1f MiB | |\n", k/1024 }'
printf '| idle CPU over %ss | %s ms (%s ticks at %s Hz) | ~0 (no polling) |\n' "$secs" "$cpu_ms" "$((t1 - t0))" "$hz"
