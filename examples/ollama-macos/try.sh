#!/usr/bin/env bash
# Try examples/ollama-macos on one machine (Linux or macOS), unprivileged:
# the dev Workload API, a stand-in for Ollama on 127.0.0.1
# (ollama-stand-in.py: /api/tags, and Ollama's 403 for a non-local Host),
# the agent with this directory's agent.yaml (the server-mode proxy on a
# free loopback port instead of 0.0.0.0:6701), then curl as Traefik (let
# through, with Host rewritten), as another workload and with no
# certificate (both refused in the handshake). Needs curl, python3. ~5 s.
# shellcheck source=examples/try-lib.sh
. "$(dirname "$0")/../try-lib.sh"
try_init ollama
need curl python3

step "the dev Workload API: the model server's identity, Traefik's and another workload's"
dev_start --spiffe-id spiffe://example.org/model-server --spiffe-id spiffe://example.org/traefik \
  --spiffe-id spiffe://example.org/web --dns localhost

step "the Ollama stand-in on 127.0.0.1 (plaintext, like Ollama)"
OLLAMA=$(free_port)
bg ollama.log python3 "$EX/ollama-macos/ollama-stand-in.py" "$OLLAMA"
wait_for 20 "the Ollama stand-in never answered" curl -sf "http://127.0.0.1:$OLLAMA/api/tags"
say "direct, Host 127.0.0.1:$OLLAMA:   $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$OLLAMA/api/tags")"
say "direct, Host models.example.org: $(curl -s -o /dev/null -w '%{http_code}' -H 'Host: models.example.org' "http://127.0.0.1:$OLLAMA/api/tags") (Ollama's guard: hence rewrite_host)"

step "the agent with examples/ollama-macos/agent.yaml (socket, admin socket, ports replaced)"
PUB=$(free_port)
subst "$EX/ollama-macos/agent.yaml" "$T/agent.yaml" \
  unix:///var/run/spire/sockets/agent.sock "unix://$API" \
  /var/db/identity-agent/admin.sock "$T/admin.sock" \
  "listen: 0.0.0.0:6701" "listen: 127.0.0.1:$PUB" \
  "target: 127.0.0.1:11434" "target: 127.0.0.1:$OLLAMA"
agent_start "$T/agent.yaml"

step "curl through the proxy as Traefik (spiffe://example.org/traefik), with Traefik's Host"
fetch_svid spiffe://example.org/traefik "$T/traefik"
fetch_svid spiffe://example.org/web "$T/web"
URL=https://localhost:$PUB/api/tags
as() { curl -sS --fail --cacert "$T/$1/bundle.pem" --cert "$T/$1/svid.pem" --key "$T/$1/key.pem" "${@:2}" "$URL"; }
out=$(as traefik -H 'Host: models.example.org') || die "Traefik's SVID was not let through: $out"
say "answer: $out"
say "Ollama saw: $(tail -n 1 "$T/ollama.log")"
grep -q 'URI=spiffe://example.org/traefik' "$T/ollama.log" || die "the proxy did not name the caller"

step "another workload's SVID (spiffe://example.org/web), then no certificate: refused in the handshake"
seen=$(grep -c '^GET' "$T/ollama.log")
if out=$(as web 2>&1); then die "spiffe://example.org/web was let through: $out"; fi
say "web:            $out"
if out=$(curl -sS --fail --cacert "$T/traefik/bundle.pem" "$URL" 2>&1); then die "a client without a certificate was let through: $out"; fi
say "no certificate: $out"
[ "$(grep -c '^GET' "$T/ollama.log")" -eq "$seen" ] || die "refused callers reached Ollama: $(cat "$T/ollama.log")"
say "Ollama got no request from either"
say "identity-agent status: $("$IA" status --config "$T/agent.yaml" | grep '^proxy')"
