# shellcheck shell=bash
# Shared by examples/*/try.sh (sourced, not run): each try-out runs the
# example's own files, unprivileged, under a temporary directory, against
# the development Workload API (`identity-agent dev`), and stops everything
# it started when it ends. Only socket paths, directories, ports, account
# names and time windows are replaced, and a replaced value that is no
# longer in the shipped file stops the try-out (so it cannot drift).
#
# Environment: IDENTITY_AGENT  the binary (default bin/identity-agent, built
#                              with `make build` if missing)
#              KEEP=1          leave the temporary directory for a look
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC2034 # used by the try.sh scripts
EX=$ROOT/examples
IA=${IDENTITY_AGENT:-$ROOT/bin/identity-agent}
PIDS=()
HOOKS=()

step() { printf '\n==> %s\n' "$*"; }
say() { printf '    %s\n' "$*"; }
die() {
  printf 'try: FAILED: %s\n' "$*" >&2
  for f in "$T"/*.log; do [ -s "$f" ] && { printf -- '--- %s (last lines)\n' "$f" >&2; tail -n 20 "$f" >&2; }; done
  exit 1
}

# need BIN...: stop at once, naming the Debian/Ubuntu package to install,
# when a program the try-out runs is missing (`make deps` installs them all).
need() {
  local b
  for b in "$@"; do
    command -v "$b" >/dev/null && continue
    local pkg=$b
    case $b in
      redis-cli) pkg=redis-tools ;;
    esac
    die "$b is not installed: apt-get install $pkg (or \`make deps\`, which installs everything the examples and tests use)"
  done
}

# try_init NAME: the temporary directory $T, the binary, the cleanup.
try_init() {
  if [ ! -x "$IA" ]; then
    echo "building $IA (make build)"
    make -C "$ROOT" --no-print-directory build
  fi
  # Short: unix socket paths are limited to ~100 bytes.
  T=$(mktemp -d "${TMPDIR:-/tmp}/ia-try-$1.XXXXXX")
  chmod 0700 "$T"
  trap try_cleanup EXIT
  trap 'exit 130' INT TERM
  echo "try-$1: everything lives in $T and stops when this script ends"
}

# on_exit CMD: run CMD (eval'd) when the script ends, before the
# background processes are stopped; last registered runs first.
on_exit() { HOOKS+=("$1"); }

try_cleanup() {
  local rc=$?
  local i
  for ((i = ${#HOOKS[@]} - 1; i >= 0; i--)); do
    eval "${HOOKS[i]}" || true
  done
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill "${PIDS[i]}" 2>/dev/null || true
  done
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    wait "${PIDS[i]}" 2>/dev/null || true
  done
  if [ "${KEEP:-}" = 1 ]; then
    echo "kept $T"
  else
    rm -rf "$T"
  fi
  if [ "$rc" -eq 0 ]; then echo "try: OK"; fi
  exit "$rc"
}

# bg LOG CMD...: run CMD in the background, output to $T/LOG; stopped at exit.
bg() {
  local log=$1
  shift
  "$@" >"$T/$log" 2>&1 &
  PIDS+=($!)
}

# subst SRC DST OLD NEW [OLD NEW]...: copy an example file with each OLD
# replaced by NEW; every OLD must be in SRC.
subst() {
  local src=$1 dst=$2
  shift 2
  local s
  s=$(cat "$src" && echo x) || die "cannot read $src"
  s=${s%x}
  while [ $# -ge 2 ]; do
    case $s in *"$1"*) ;; *) die "$src no longer contains '$1': update its try.sh" ;; esac
    s=${s//"$1"/"$2"}
    shift 2
  done
  printf '%s' "$s" >"$dst"
}

# free_port: an unused loopback TCP port.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for SECONDS WHAT CMD...: retry CMD until it succeeds.
wait_for() {
  local secs=$1 what=$2
  shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || die "$what (after ${secs}s)"
    sleep 0.2
  done
}

# dev_start ARGS...: the development Workload API on $T/api.sock (SVIDs
# live 1h: rotations happen when the script sends SIGUSR1).
dev_start() {
  API=$T/api.sock
  bg dev.log "$IA" dev --socket "$API" --trust-domain example.org --ttl 1h "$@"
  DEV=$!
  wait_for 20 "the dev Workload API never listened on $API" test -S "$API"
  say "dev Workload API on $API (pid $DEV): $*"
}

# rotate_svids: the dev API issues and pushes new SVIDs, as SPIRE does at
# half of their lifetime.
rotate_svids() { kill -USR1 "$DEV"; }

# agent_start CONFIG: `identity-agent run`, then wait for status OK.
agent_start() {
  "$IA" config validate "$1" >/dev/null || die "config validate $1: $("$IA" config validate "$1" 2>&1)"
  bg agent.log "$IA" run --config "$1"
  wait_for 30 "identity-agent status never OK" "$IA" status --config "$1"
  say "agent running; identity-agent status --config $1:"
  "$IA" status --config "$1" | sed 's/^/      /'
}

# fetch_svid ID DIR: write the SVID of ID (another workload, as SPIRE would
# give it on its own host) to DIR/{svid,key,bundle}.pem with `fetch`.
fetch_svid() {
  mkdir -p "$2"
  cat >"$T/fetch-$(basename "$2").yaml" <<EOF
workload_api: {socket: "unix://$API"}
admin: {socket: "$T/fetch.sock"}
outputs:
  - name: client
    spiffe_id: $1
    dir: $2
    cert_file: svid.pem
    key_file: key.pem
    bundle_file: bundle.pem
EOF
  "$IA" fetch --config "$T/fetch-$(basename "$2").yaml" --timeout 20s >"$T/fetch.out" 2>&1 || die "fetch $1: $(cat "$T/fetch.out")"
}

# serial FILE: a certificate file's serial.
serial() { openssl x509 -noout -serial -in "$1" | sed 's/^serial=//'; }

# served_serial HOST:PORT CERT KEY CA: the serial a TLS server presents.
served_serial() {
  openssl s_client -connect "$1" -cert "$2" -key "$3" -CAfile "$4" </dev/null 2>/dev/null |
    openssl x509 -noout -serial 2>/dev/null | sed 's/^serial=//'
}
