#!/usr/bin/env bash
# Try examples/redis on one machine, unprivileged, with a real redis-server:
# the dev Workload API, redis-server from redis-phase-A.conf, the agent with
# this directory's agent.yaml (short window and sampling), then the
# password → mTLS walk A→B→C→D (a plaintext client holding D back until it
# leaves) and back D→C→B→A, with a certificate rotation reloaded by CONFIG
# SET on the way. Needs redis-server and redis-cli (with TLS), openssl,
# python3 (a stand-in for the API's health check). About 30 s.
# shellcheck source=examples/try-lib.sh
. "$(dirname "$0")/../try-lib.sh"
try_init redis
need redis-server redis-cli openssl

step "the dev Workload API: Redis's identity"
dev_start --spiffe-id spiffe://example.org/redis

PLAIN=$(free_port)
TLS=$(free_port)
PW=$(openssl rand -hex 16)
CERTS=$T/certs/redis
step "redis-server in phase A from redis-phase-A.conf (paths, ports and password replaced)"
mkdir -p "$T/redis"
subst "$EX/redis/redis-phase-A.conf" "$T/redis.conf" \
  "bind 127.0.0.1 -::1" "bind 127.0.0.1" \
  /run/redis/redis.sock "$T/redis.sock" \
  "requirepass CHANGE-ME" "requirepass $PW" \
  "dir /var/lib/redis" "dir $T/redis" \
  $'\nport 6379\n' $'\nport '"$PLAIN"$'\n'
bg redis.log redis-server "$T/redis.conf"
REDIS=$!
export REDISCLI_AUTH=$PW # redis-cli's password, out of ps
plain() { redis-cli -h 127.0.0.1 -p "$PLAIN" "$@"; }
wait_for 20 "redis-server never answered" sh -c "redis-cli -s '$T/redis.sock' ping | grep -q PONG"
say "redis-server pid $REDIS: password on 127.0.0.1:$PLAIN, no TLS; PING: $(plain ping)"
# The password file the agent reads (step 0 of the README).
install -m 0600 /dev/null "$T/redis-admin.pass"
printf '%s\n' "$PW" >"$T/redis-admin.pass"

# The API's health check (an HTTP 200 on /healthz) answered by a stand-in.
APIPORT=$(free_port)
mkdir -p "$T/api"
echo ok >"$T/api/healthz"
bg api.log python3 -m http.server --bind 127.0.0.1 --directory "$T/api" "$APIPORT"
wait_for 20 "the health check stand-in never answered" curl -sf "http://127.0.0.1:$APIPORT/healthz"

step "the agent with examples/redis/agent.yaml (paths, ports, group replaced; window 24h → 5s, sampling 15s → 1s)"
subst "$EX/redis/agent.yaml" "$T/agent.yaml" \
  unix:///run/spire/sockets/agent.sock "unix://$API" \
  /run/identity-agent/admin.sock "$T/admin.sock" \
  /etc/identity-agent/certs/redis "$CERTS" \
  "group: redis" "group: $(id -gn)" \
  unix:///run/redis/redis.sock "unix://$T/redis.sock" \
  /etc/identity-agent/redis-admin.pass "$T/redis-admin.pass" \
  "plain_port: 6379" "plain_port: $PLAIN" \
  "tls_port: 6380" "tls_port: $TLS" \
  "tls_addr: 127.0.0.1:6380" "tls_addr: 127.0.0.1:$TLS" \
  /var/lib/identity-agent/redis-transition.json "$T/redis-transition.json" \
  "window: 24h" "window: 5s" \
  "sample_interval: 15s" "sample_interval: 1s" \
  "http://127.0.0.1:8000/healthz" "http://127.0.0.1:$APIPORT/healthz" \
  '[celery, -A, proj, inspect, ping, -t, "5"]' '[true]'
say "(the Celery worker's ping is replaced by true: no worker runs here)"
agent_start "$T/agent.yaml"

transition() { "$IA" redis transition "$@" --config "$T/agent.yaml"; }
tls() { redis-cli --tls --cert "$CERTS/svid.pem" --key "$CERTS/key.pem" --cacert "$CERTS/bundle.pem" -h 127.0.0.1 -p "$TLS" "$@"; }
expect() { # expect WANT CMD...: CMD prints WANT
  local got
  got=$("${@:2}" 2>&1) || true
  [ "$got" = "$1" ] || die "$*: got '$got', want '$1'"
}
advance() { transition advance --confirm | sed 's/^/    /'; [ "${PIPESTATUS[0]}" -eq 0 ] || die "advance refused"; }
rollback() { transition rollback --confirm | sed 's/^/    /'; [ "${PIPESTATUS[0]}" -eq 0 ] || die "rollback refused"; }

step "phase A: identity-agent redis transition status"
transition status | sed 's/^/    /'
transition status | grep -q "phase A" || die "not in phase A"

step "A → B: tls-port $TLS opens with the agent's files, the password stays"
advance
expect PONG tls ping
expect PONG plain ping
say "PING over mTLS (with the password): PONG; on the plaintext port: PONG"

step "rotation in B: new SVIDs, the agent's redis reload (CONFIG SET), no restart"
before=$(served_serial "127.0.0.1:$TLS" "$CERTS/svid.pem" "$CERTS/key.pem" "$CERTS/bundle.pem")
rotate_svids
rotated() {
  local s
  s=$(served_serial "127.0.0.1:$TLS" "$CERTS/svid.pem" "$CERTS/key.pem" "$CERTS/bundle.pem")
  [ -n "$s" ] && [ "$s" != "$before" ] && [ "$s" = "$(serial "$CERTS/svid.pem")" ]
}
wait_for 30 "redis-server never served the rotated certificate" rotated
kill -0 "$REDIS" || die "redis-server is gone"
say "served serial $before -> $(serial "$CERTS/svid.pem"), same redis-server (pid $REDIS)"

step "B → C: the TLS port answers the agent's SVID, health checks pass"
advance

step "C → D is refused while a client still uses the plaintext port"
bg legacy.log redis-cli -h 127.0.0.1 -p "$PLAIN" blpop try:never 0
LEGACY=$!
sleep 2.5 # the running agent samples CLIENT LIST every second
if out=$(transition advance --confirm 2>&1); then die "C → D allowed with a plaintext client connected: $out"; fi
say "$out"
kill "$LEGACY"
wait "$LEGACY" 2>/dev/null || true

step "the plaintext client left: after the 5 s window, C → D"
d_allowed() { transition advance --confirm >"$T/advance.out" 2>&1; }
wait_for 30 "C → D never allowed: $(cat "$T/advance.out" 2>/dev/null)" d_allowed
sed 's/^/    /' "$T/advance.out"
if plain ping >/dev/null 2>&1; then die "plaintext port $PLAIN still answers in D"; fi
expect PONG env -u REDISCLI_AUTH redis-cli --tls --cert "$CERTS/svid.pem" --key "$CERTS/key.pem" --cacert "$CERTS/bundle.pem" -h 127.0.0.1 -p "$TLS" ping
say "plaintext port closed; PING over mTLS without any password: PONG"

step "and back, one step at a time: D → C, C → B, B → A"
rollback
expect PONG plain ping
env -u REDISCLI_AUTH redis-cli -h 127.0.0.1 -p "$PLAIN" ping 2>&1 | grep -q NOAUTH || die "D → C: the plaintext port answers without the password"
say "plaintext port open again, the password required again (without it: NOAUTH), with it: PONG"
rollback
rollback
if tls ping >/dev/null 2>&1; then die "TLS port $TLS still answers in A"; fi
transition status | grep -q "phase A" || die "not back in phase A"
say "phase A again: $(plain ping) on the plaintext port, TLS port closed"
say "redis.conf as CONFIG REWRITE left it: $(grep -E '^(port|tls-port|requirepass) ' "$T/redis.conf" | sed "s/$PW/<password>/" | tr '\n' ';')"
