#!/usr/bin/env bash
# Installs what the integration tests use, only if something is missing:
# redis-server (Debian's build has TLS), uvicorn, openssl and curl as
# independent TLS peers, redis-py for the Celery client snippet,
# systemd-analyze for the unit checks; promtool (Debian's prometheus
# package) for the alert rules, ansible-core and ansible-lint for the
# Ansible role, python3-celery for the Celery worker of examples/redis.
# `deps.sh systemd`: systemd-nspawn and debootstrap for make test-systemd.
set -euo pipefail
missing=()
if [ "${1:-}" = systemd ]; then
  # make test-systemd: boot Debian's systemd in containers.
  command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v unshare >/dev/null || missing+=(util-linux)
else
  command -v redis-server >/dev/null || missing+=(redis-server)
  /usr/bin/python3 -c 'import uvicorn' 2>/dev/null || missing+=(python3-uvicorn)
  /usr/bin/python3 -c 'import redis' 2>/dev/null || missing+=(python3-redis)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v curl >/dev/null || missing+=(curl)
  command -v systemd-analyze >/dev/null || missing+=(systemd)
  command -v promtool >/dev/null || missing+=(prometheus)
  command -v ansible-playbook >/dev/null || missing+=(ansible-core)
  command -v ansible-lint >/dev/null || missing+=(ansible-lint)
  /usr/bin/python3 -c 'import celery' 2>/dev/null || missing+=(python3-celery)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "installing test dependencies: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's packages may start redis-server on 6379 and prometheus on 9090;
# the tests start their own redis-server and need no Prometheus server.
for s in redis-server prometheus; do
  $SUDO systemctl stop "$s" 2>/dev/null || $SUDO service "$s" stop 2>/dev/null || true
done
