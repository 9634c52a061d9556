#!/bin/sh
# Registers, on the SPIRE server, the identities ONE identity-agent writes
# for a host running Redis, uvicorn and Traefik (examples/spire/agent.yaml).
#
# SPIRE's unix workload attestor identifies the process that calls the
# Workload API by its uid: the identity agent, not the services. So every
# entry here carries the identity agent's uid, and each one a -hint that
# the agent's outputs select (`hint: redis`, ...). Whoever can run code as
# that uid receives all three identities: run the agent under a dedicated
# account (`identity-agent install` creates `identity-agent`).
#
# Run it where spire-server can reach the server's API socket. Every
# value can be overridden from the environment:
#   TRUST_DOMAIN  example.org
#   NODE_ID       the parent: this host's SPIRE agent, or a node alias for
#                 it (default spiffe://$TRUST_DOMAIN/host/web-1)
#   IA_UID        the identity agent's uid on that host
#                 (default: `id -u identity-agent` here; run it on the host
#                 or pass the number)
#   X509_TTL      X.509-SVID lifetime in seconds (default 3600: SPIRE's agent
#                 renews at half of it, every 30 minutes)
#   SPIRE_SERVER  the spire-server command (default spire-server)
#   SOCKET_PATH   the server API socket (default: spire-server's own default)
set -eu
TRUST_DOMAIN=${TRUST_DOMAIN:-example.org}
NODE_ID=${NODE_ID:-spiffe://$TRUST_DOMAIN/host/web-1}
IA_UID=${IA_UID:-$(id -u identity-agent)}
X509_TTL=${X509_TTL:-3600}
SPIRE_SERVER=${SPIRE_SERVER:-spire-server}

for svc in redis uvicorn traefik; do
  # The exact line, for a reader who registers by hand:
  #   spire-server entry create -parentID spiffe://example.org/host/web-1 \
  #     -spiffeID spiffe://example.org/redis -selector unix:uid:998 \
  #     -hint redis -x509SVIDTTL 3600
  "$SPIRE_SERVER" entry create \
    -parentID "$NODE_ID" \
    -spiffeID "spiffe://$TRUST_DOMAIN/$svc" \
    -selector "unix:uid:$IA_UID" \
    -hint "$svc" \
    -x509SVIDTTL "$X509_TTL" \
    ${SOCKET_PATH:+-socketPath "$SOCKET_PATH"}
done
