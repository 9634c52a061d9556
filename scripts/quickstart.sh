#!/usr/bin/env bash
# Runs the development Workload API and the agent with examples/quickstart.yaml.
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=bin/identity-agent
base=/tmp/identity-agent-quickstart
mkdir -p "$base"
"$bin" dev --socket "$base/agent.sock" --trust-domain example.org \
  --spiffe-id spiffe://example.org/demo --ttl "${TTL:-1m}" &
dev=$!
trap 'kill "$dev" 2>/dev/null || true; wait "$dev" 2>/dev/null || true' EXIT
cat <<MSG
identity-agent quick start: files in $base/demo (rotating every ${TTL:-1m}/2).
In another terminal:
  $bin status --config examples/quickstart.yaml
  openssl x509 -noout -text -in $base/demo/svid.pem | grep -A1 'Subject Alternative Name'
  kill -HUP $dev    # rotate the dev CA
MSG
"$bin" run --config examples/quickstart.yaml
