#!/usr/bin/env bash
# Try examples/uvicorn on one machine, unprivileged: the dev Workload API,
# the agent with this directory's agent.yaml, uvicorn started with exactly
# api.service's ExecStart serving app.py, curl with and without a client
# SVID, then a rotation: the agent's reload (`systemctl restart
# api.service`, answered by a stand-in that stops uvicorn; a loop restarts
# it as Restart=always does) and uvicorn serves the new certificate.
# Needs python3 with uvicorn, curl, openssl. About 15 s.
# shellcheck source=examples/try-lib.sh
. "$(dirname "$0")/../try-lib.sh"
try_init uvicorn
need curl

step "the dev Workload API: the API's identity (a DNS name for curl) and a caller's"
dev_start --spiffe-id spiffe://example.org/api --spiffe-id spiffe://example.org/traefik --dns localhost

step "the agent with examples/uvicorn/agent.yaml (socket, directory and group replaced)"
CERTS=$T/certs/api
subst "$EX/uvicorn/agent.yaml" "$T/agent.yaml" \
  unix:///run/spire/sockets/agent.sock "unix://$API" \
  /run/identity-agent/admin.sock "$T/admin.sock" \
  /etc/identity-agent/certs/api "$CERTS" \
  "group: api" "group: $(id -gn)"
# The reload runs `systemctl restart api.service`: a stand-in on the agent's
# PATH stops uvicorn as systemd's restart would; the loop below starts it again.
# At start the agent asks `is-active` first and skips a unit that does not run.
mkdir -p "$T/bin"
cat >"$T/bin/systemctl" <<EOF
#!/bin/sh
echo "\$*" >>"$T/systemctl.calls"
if [ "\$*" = "is-active --quiet api.service" ]; then [ -f "$T/uvicorn.pid" ] && exit 0; exit 3; fi
[ "\$1 \$2" = "restart api.service" ] || { echo "systemctl stand-in: unexpected: \$*" >&2; exit 1; }
[ -f "$T/uvicorn.pid" ] && kill -TERM "\$(cat "$T/uvicorn.pid")" 2>/dev/null
exit 0
EOF
chmod 0755 "$T/bin/systemctl"
PATH=$T/bin:$PATH agent_start "$T/agent.yaml"
say "files: $(cd "$CERTS" && ls -lL svid.pem key.pem bundle.pem | awk '{print $1, $NF}' | tr '\n' ' ')"

step "uvicorn exactly as api.service starts it (host and port replaced), app.py from here"
PORT=$(free_port)
subst "$EX/uvicorn/api.service" "$T/api.service" \
  /etc/identity-agent/certs/api "$CERTS" \
  "--host 0.0.0.0" "--host 127.0.0.1" \
  "--port 8443" "--port $PORT"
# ExecStart= with its continuation lines.
read -r -a ARGV <<<"$(sed -n '/^ExecStart=/,/[^\\]$/p' "$T/api.service" | sed 's/^ExecStart=//; s/\\$//' | tr '\n' ' ')"
say "${ARGV[*]}"
"${ARGV[0]}" -c 'import uvicorn' 2>/dev/null || die "uvicorn is not installed for ${ARGV[0]}: apt-get install python3-uvicorn (or \`make deps\`)"
mkdir -p "$T/srv-api"
cp "$EX/uvicorn/app.py" "$T/srv-api/app.py"
supervise() { # Restart=always, RestartSec shortened
  cd "$T/srv-api" || exit 1
  while [ ! -e "$T/stop" ]; do
    "${ARGV[@]}" &
    echo $! >"$T/uvicorn.pid"
    wait $! || true
    rm -f "$T/uvicorn.pid"
    sleep 0.3
  done
}
bg uvicorn.log supervise
SUP=$!
stop_uvicorn() { touch "$T/stop"; [ -f "$T/uvicorn.pid" ] && kill "$(cat "$T/uvicorn.pid")" 2>/dev/null; wait "$SUP" 2>/dev/null || true; }
on_exit stop_uvicorn

step "curl with a caller's SVID (spiffe://example.org/traefik), then without one"
fetch_svid spiffe://example.org/traefik "$T/caller"
C=$T/caller
URL=https://localhost:$PORT/
wait_for 30 "uvicorn never answered" curl -sS --fail --cacert "$CERTS/bundle.pem" --cert "$C/svid.pem" --key "$C/key.pem" "$URL"
out=$(curl -sS --cacert "$CERTS/bundle.pem" --cert "$C/svid.pem" --key "$C/key.pem" "$URL")
say "with an SVID:    $out"
[ "$out" = "ok caller=-" ] || die "unexpected answer: $out"
if out=$(curl -sS --cacert "$CERTS/bundle.pem" "$URL" 2>&1); then
  die "uvicorn answered a client without a certificate: $out"
fi
say "without one:     refused ($out)"

step "rotation: new SVIDs, the agent writes them and restarts uvicorn, which serves the new certificate"
before=$(served_serial "127.0.0.1:$PORT" "$C/svid.pem" "$C/key.pem" "$CERTS/bundle.pem")
rotate_svids
new_cert_served() {
  local s
  s=$(served_serial "127.0.0.1:$PORT" "$C/svid.pem" "$C/key.pem" "$CERTS/bundle.pem")
  [ -n "$s" ] && [ "$s" != "$before" ] && [ "$s" = "$(serial "$CERTS/svid.pem")" ]
}
wait_for 40 "uvicorn never served the rotated certificate" new_cert_served
say "served serial $before -> $(serial "$CERTS/svid.pem") (= svid.pem); the agent ran: $(tail -n 1 "$T/systemctl.calls")"
out=$(curl -sS --fail --cacert "$CERTS/bundle.pem" --cert "$C/svid.pem" --key "$C/key.pem" "$URL")
say "with an SVID:    $out"
