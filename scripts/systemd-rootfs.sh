#!/usr/bin/env bash
# Root file systems for `make test-systemd` (internal/systemdtest): a
# minimal Debian with systemd as PID 1, booted by systemd-nspawn.
#
#   scripts/systemd-rootfs.sh FLAVOUR     # prints the cached rootfs directory
#
# FLAVOUR  systemd  from
# bookworm     252  debootstrap bookworm (Debian 12, CI's host)
# bookworm-backports
#              254  the bookworm rootfs + systemd from bookworm-backports
#                   (the first with Type=notify-reload)
# trixie       257  debootstrap trixie (Debian 13)
#
# Each rootfs is built once and cached under
# ${XDG_CACHE_HOME:-$HOME/.cache}/identity-agent/nspawn/FLAVOUR-KEY/rootfs,
# KEY being a hash of this script (the recipe): editing the recipe builds
# anew and removes the flavour's older builds. Tests never write to it (they
# boot an overlay on top). Needs root, debootstrap and the Debian mirror
# (IDENTITY_AGENT_DEBIAN_MIRROR, default http://deb.debian.org/debian, the
# host's apt source); about 1-2 min per debootstrap, 20 s for backports.
set -euo pipefail

flavour=${1:?usage: $0 bookworm|bookworm-backports|trixie}
mirror=${IDENTITY_AGENT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/identity-agent/nspawn

# What the tests need inside: systemd as PID 1 with D-Bus and polkit (a
# consumer restarted by the agent's user), python3 and ansible-core (the
# Ansible role applied with connection: local), Debian's uvicorn and openssl
# (examples/uvicorn's setup, checked with s_client). debootstrap resolves no
# virtual packages, so python3-cryptography's cffi backend is named.
packages=systemd,systemd-sysv,dbus,libpam-systemd,polkitd,python3,python3-cffi-backend,ansible-core,python3-uvicorn,openssl
# bookworm-backports' systemd and the libraries that must match it.
backports=(systemd systemd-sysv libpam-systemd libsystemd0 libsystemd-shared libudev1)

case $flavour in
bookworm | bookworm-backports | trixie) ;;
*) echo "$0: unknown flavour $flavour (bookworm, bookworm-backports, trixie)" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "$0: needs root (debootstrap, chroot)" >&2; exit 1; }

key=$(cat "$0" | sha256sum | cut -c1-12)
dir=$cache/$flavour-$key
if [ -d "$dir/rootfs" ]; then
  echo "$dir/rootfs"
  exit 0
fi

# The backports flavour starts from the bookworm rootfs (resolved before
# taking the lock: it takes bookworm's).
base=""
if [ "$flavour" = bookworm-backports ]; then
  base=$("$0" bookworm | tail -n1)
fi

mkdir -p "$cache"
exec 9>"$cache/.lock-$flavour"
flock 9
if [ -d "$dir/rootfs" ]; then # built by a concurrent run meanwhile
  echo "$dir/rootfs"
  exit 0
fi

tmp=$cache/.build-$flavour-$key-$$
trap 'rm -rf "$tmp"' EXIT
rm -rf "$tmp"
mkdir -p "$tmp"
start=$SECONDS
log=$tmp/build.log
run() { # quiet unless it fails
  if ! "$@" >>"$log" 2>&1; then
    echo "$0: $flavour: failed: $*; last lines of the log:" >&2
    tail -n 30 "$log" >&2
    [ -f "$tmp/rootfs/debootstrap/debootstrap.log" ] && tail -n 30 "$tmp/rootfs/debootstrap/debootstrap.log" >&2
    exit 1
  fi
}
in_root() { run chroot "$tmp/rootfs" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"; }

echo "$0: building the $flavour rootfs in $dir (once; about 1-2 min)" >&2
case $flavour in
bookworm | trixie)
  run debootstrap --variant=minbase --include="$packages" "$flavour" "$tmp/rootfs" "$mirror"
  ;;
bookworm-backports)
  run cp -a "$base" "$tmp/rootfs"
  echo "deb $mirror bookworm-backports main" >"$tmp/rootfs/etc/apt/sources.list.d/backports.list"
  in_root apt-get update -qq
  in_root apt-get install -y -qq --no-install-recommends -t bookworm-backports "${backports[@]}"
  ;;
esac

# Nothing the tests do not ask for runs in the container: no timers that
# would reach for the network (it has none) or scan file systems.
for u in apt-daily.timer apt-daily-upgrade.timer fstrim.timer e2scrub_all.timer e2scrub_reap.service; do
  ln -sf /dev/null "$tmp/rootfs/etc/systemd/system/$u"
done
in_root apt-get clean
rm -rf "$tmp/rootfs/var/lib/apt/lists/"* "$tmp/rootfs/debootstrap"
# nspawn gives the container its machine id; an empty file means "not yet".
: >"$tmp/rootfs/etc/machine-id"
echo "$flavour $key" >"$tmp/rootfs/etc/identity-agent-test-rootfs"

# Older recipes of this flavour are dead weight.
for old in "$cache/$flavour"-*; do
  if [[ ${old##*/} =~ ^$flavour-[0-9a-f]{12}$ ]] && [ "$old" != "$dir" ]; then rm -rf "$old"; fi
done
mkdir -p "$dir"
mv "$tmp/rootfs" "$dir/rootfs"
echo "$0: $flavour rootfs built in $((SECONDS - start)) s" >&2
echo "$dir/rootfs"
