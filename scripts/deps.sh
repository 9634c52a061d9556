#!/usr/bin/env bash
# Installs what the integration tests use, only if something is missing:
# redis-server (Debian's build has TLS), uvicorn, openssl and curl as
# independent TLS peers, redis-py for the Celery client snippet,
# systemd-analyze for the unit checks.
set -euo pipefail
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
/usr/bin/python3 -c 'import uvicorn' 2>/dev/null || missing+=(python3-uvicorn)
/usr/bin/python3 -c 'import redis' 2>/dev/null || missing+=(python3-redis)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
command -v systemd-analyze >/dev/null || missing+=(systemd)
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "installing test dependencies: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's package may start a redis-server on 6379; the tests start their own.
$SUDO systemctl stop redis-server 2>/dev/null || $SUDO service redis-server stop 2>/dev/null || true
