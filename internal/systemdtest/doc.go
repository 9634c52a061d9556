// Package systemdtest boots a real systemd, Debian's, as PID 1 of a
// throwaway systemd-nspawn container, for the tests of `make test-systemd`:
// the agent installed with `identity-agent install`, started, reloaded and
// restarted by that systemd, with polkit, the journal and the Ansible role
// inside.
//
// Flavours are Debian bookworm (systemd 252), bookworm with bookworm-backports'
// systemd 254 (the first with Type=notify-reload) and trixie (257). Each root
// file system is built once by scripts/systemd-rootfs.sh and cached; every
// machine boots an overlay on top of it, so tests never change the cache.
//
// Everything a test process starts lives under one directory
// ($TMPDIR/ia-nspawn-*) and one process tree per machine: `unshare` with its
// own mount and PID namespaces mounts the overlay and execs systemd-nspawn,
// so killing that one process ends the container and drops its mounts with
// it. Machines are killed by t.Cleanup, by Run.Close on SIGINT/SIGTERM and
// before the test binary's -timeout; a run that was killed outright is
// cleaned up by the next one (CleanLeftovers).
//
// The tests themselves are in systemd_test.go behind the `systemd` build
// tag: `make test` does not build them, `make test-systemd` runs them.
package systemdtest
