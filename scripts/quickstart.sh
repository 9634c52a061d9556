#!/usr/bin/env bash
# `make run`: the development Workload API and the agent with
# examples/quickstart.yaml, in a directory of this user and checkout (two
# checkouts never share sockets or files). Ctrl-C stops both.
#
# The config is examples/quickstart.yaml with its directory
# (/tmp/identity-agent-quickstart) replaced by that one, written to
# .run/quickstart.yaml; .run/quickstart links to the directory.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${IDENTITY_AGENT:-bin/identity-agent}
run=${QUICKSTART_RUN:-.run}   # where the config and the link go (tests use their own)
sum=$(pwd -P | cksum | cut -d' ' -f1)
base=${QUICKSTART_DIR:-/tmp/identity-agent-quickstart-$(id -u)-$sum}
mkdir -p "$run" "$base"
chmod 0700 "$base"
sed "s|/tmp/identity-agent-quickstart|$base|g" examples/quickstart.yaml >"$run/quickstart.yaml.tmp"
mv "$run/quickstart.yaml.tmp" "$run/quickstart.yaml"
ln -sfn "$base" "$run/quickstart"
echo "identity-agent quick start: directory $base (linked as $run/quickstart)"
echo "starting the development Workload API on $base/agent.sock (SVID lifetime ${TTL:-1m})"
"$bin" dev --socket "$base/agent.sock" --trust-domain example.org \
  --spiffe-id spiffe://example.org/demo --ttl "${TTL:-1m}" &
dev=$!
trap 'kill "$dev" 2>/dev/null || true; wait "$dev" 2>/dev/null || true' EXIT
cat <<MSG
starting the agent with $run/quickstart.yaml: files in $run/quickstart/demo, rotating every ${TTL:-1m}/2.
In another terminal:
  $bin status --config $run/quickstart.yaml
  openssl x509 -noout -text -in $run/quickstart/demo/svid.pem | grep -A1 'Alternative Name'
  kill -HUP $dev    # rotate the dev CA
MSG
"$bin" run --config "$run/quickstart.yaml"
