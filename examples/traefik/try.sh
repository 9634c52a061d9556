#!/usr/bin/env bash
# Try examples/traefik on one machine, unprivileged (no Traefik needed: the
# agent's part is the file Traefik watches): the dev Workload API, the agent
# with this directory's agent.yaml writing the serversTransport into its
# output's set and linking it into a copy of the watched directory next to
# dynamic/models.yml, a check that the inline credentials reach an mTLS
# server that accepts only Traefik's SPIFFE ID (the standalone
# `identity-agent proxy server` as the model server), and three rotations,
# each renaming a fresh link into the watched directory: the event Traefik's
# file provider reloads on. Needs openssl, curl, python3. About 15 s.
# shellcheck source=examples/try-lib.sh
. "$(dirname "$0")/../try-lib.sh"
try_init traefik
need openssl curl python3

step "the dev Workload API: Traefik's identity, and the model server's (for the check)"
dev_start --spiffe-id spiffe://example.org/traefik --spiffe-id spiffe://example.org/model-server --dns localhost

step "the agent with examples/traefik/agent.yaml (socket, directories and group replaced)"
CERTS=$T/certs/traefik
DYN=$T/traefik/dynamic
mkdir -p "$DYN"
subst "$EX/traefik/traefik.yml" "$T/traefik/traefik.yml" /etc/traefik/dynamic "$DYN"
cp "$EX/traefik/dynamic/models.yml" "$DYN/models.yml"
subst "$EX/traefik/agent.yaml" "$T/agent.yaml" \
  unix:///run/spire/sockets/agent.sock "unix://$API" \
  /run/identity-agent/admin.sock "$T/admin.sock" \
  /etc/identity-agent/certs/traefik "$CERTS" \
  /etc/traefik/dynamic "$DYN" \
  "group: traefik" "group: $(id -gn)"
agent_start "$T/agent.yaml"
FILE=$DYN/identity-agent.yml
say "the watched directory (traefik.yml's providers.file.directory): a link into the output's set"
ls -l "$DYN" | sed 's/^/      /'

# inline KEY: the PEM under certFile, keyFile or rootCAs in the generated
# transport (YAML block scalars), as Traefik reads them.
inline() {
  awk -v want="$1" '
    /certFile: \|/ {sect = "certFile"} /keyFile: \|/ {sect = "keyFile"} /rootCAs:/ {sect = "rootCAs"}
    /-----BEGIN / {on = (sect == want)}
    on {sub(/^ +/, ""); print}
    /-----END / {on = 0}' "$FILE"
}
extract() {
  mkdir -p "$T/inline"
  inline certFile >"$T/inline/cert.pem"
  inline keyFile >"$T/inline/key.pem"
  inline rootCAs >"$T/inline/roots.pem"
}
extract
say "transport: $(grep -E '^ +(peerCertURI|insecureSkipVerify|model-server):' "$FILE" | sed 's/^ *//' | tr '\n' ' ')"
[ "$(serial "$T/inline/cert.pem")" = "$(serial "$CERTS/svid.pem")" ] || die "the inline certificate is not svid.pem"
say "inline certificate = svid.pem, serial $(serial "$CERTS/svid.pem"), $(openssl x509 -noout -ext subjectAltName -in "$T/inline/cert.pem" | grep -o 'URI:[^,]*')"

step "the inline credentials reach an mTLS server that accepts only spiffe://example.org/traefik"
BACKEND=$(free_port)
MODEL=$(free_port)
mkdir -p "$T/backend/api"
echo '{"models":[{"name":"llama3.2:3b"}]}' >"$T/backend/api/tags"
bg backend.log python3 -m http.server --bind 127.0.0.1 --directory "$T/backend" "$BACKEND"
bg model-proxy.log "$IA" proxy server --workload-api "unix://$API" --spiffe-id spiffe://example.org/model-server \
  --listen "127.0.0.1:$MODEL" --target "127.0.0.1:$BACKEND" --allow spiffe://example.org/traefik
call() { curl -sS --fail --cert "$T/inline/cert.pem" --key "$T/inline/key.pem" --cacert "$T/inline/roots.pem" "https://localhost:$MODEL/api/tags"; }
wait_for 30 "the model server never answered the inline credentials" call
say "GET /api/tags with the transport's certificate: $(call)"

step "rotations: each writes a new set and renames a fresh link into the watched directory"
# Traefik's provider reloads on an event named like its file in the watched
# directory; a link renamed over the old one is such an event, and shows as
# a new inode of the name (ls -i without -L looks at the link itself).
inode() { ls -id "$FILE" | awk '{print $1}'; }
for n in 1 2 3; do
  before=$(serial "$T/inline/cert.pem")
  link_before=$(inode)
  rotate_svids
  rewritten() {
    extract
    local s
    s=$(serial "$T/inline/cert.pem" 2>/dev/null) || return 1
    [ "$s" != "$before" ] && [ "$s" = "$(serial "$CERTS/svid.pem")" ] && [ "$(inode)" != "$link_before" ]
  }
  wait_for 30 "rotation $n: the watched link never carried the rotated SVID" rewritten
  say "rotation $n: inline serial $before -> $(serial "$T/inline/cert.pem"), link $FILE renamed in (inode $link_before -> $(inode))"
done
say "the rotated credentials work too: $(call)"
say "the link and what it points at (the key stays in the output's set):"
ls -l "$DYN" | sed 's/^/      /'
ls -lL "$FILE" | sed 's/^/      /'
