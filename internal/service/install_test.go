package service

import (
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeSystemctl records every call; is-active answers from a file so the
// test can play "running" and "stopped".
const fakeSystemctl = `#!/bin/sh
echo "$*" >> "$IA_SYSTEMCTL_LOG"
case "$1" in
--version) echo "systemd 254 (254.16-1~bpo12+1)";;
is-active) cat "$IA_SYSTEMCTL_STATE";;
list-unit-files) echo "identity-agent.service enabled";;
esac
exit 0
`

// TestInstallInNamespace runs the real Install/Start/Status/Uninstall path
// of kardianos/service against a systemd layout that exists only in a
// private mount namespace: tmpfs on /etc/systemd/system, /run/systemd and
// /mnt (the output dirs), and a systemctl that records its arguments. No
// running systemd, nothing left on the host.
func TestInstallInNamespace(t *testing.T) {
	if os.Getenv("IA_SERVICE_IN_NS") == "1" {
		installInNamespace(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for a private mount namespace (unshare -m)")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) not installed")
	}
	if _, err := user.Lookup("nobody"); err != nil {
		t.Skip("no user nobody to install for")
	}
	if err := exec.Command("unshare", "-m", "--propagation", "private", "true").Run(); err != nil {
		t.Skipf("cannot create a mount namespace here: %v", err)
	}
	bin := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(bin, "systemctl"), []byte(fakeSystemctl), 0o755))
	state := filepath.Join(bin, "state")
	require.NoError(t, os.WriteFile(state, []byte("active\n"), 0o644))
	script := `set -e
mount -t tmpfs ia-units /etc/systemd/system
mkdir -p /run/systemd && mount -t tmpfs ia-run /run/systemd && mkdir /run/systemd/system
mount -t tmpfs ia-out /mnt
exec "$@"`
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
		os.Args[0], "-test.run=^TestInstallInNamespace$", "-test.v")
	cmd.Env = append(os.Environ(), "IA_SERVICE_IN_NS=1",
		"PATH="+bin+":"+os.Getenv("PATH"),
		"IA_SYSTEMCTL_LOG="+filepath.Join(bin, "log"),
		"IA_SYSTEMCTL_STATE="+state)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "--- PASS: TestInstallInNamespace")
	// Nothing leaked to the host.
	_, err = os.Stat("/etc/systemd/system/identity-agent.service")
	require.ErrorIs(t, err, fs.ErrNotExist)
}

func installInNamespace(t *testing.T) {
	log := os.Getenv("IA_SYSTEMCTL_LOG")
	calls := func() string { b, _ := os.ReadFile(log); return string(b) }
	c := InstallConfig{
		ConfigPath: "/etc/identity-agent/config.yaml", User: "nobody", Group: "nogroup",
		BinaryPath: DefaultBinaryPath, OutputDirs: []string{"/mnt/ia/redis", "/mnt/ia/traefik"},
	}
	want, err := RenderSystemdUnit(c)
	require.NoError(t, err)

	res, err := Install(c)
	require.NoError(t, err)
	require.True(t, res.Changed)
	require.Equal(t, SystemdUnitPath, res.Path)
	got, err := os.ReadFile(SystemdUnitPath)
	require.NoError(t, err)
	require.Equal(t, string(want), string(got), "installed unit differs from the template rendering")
	// On systemd 254 too, the reload's verdict is ExecReload='s exit status.
	require.Contains(t, string(got), strings.ReplaceAll(reloadLines, "/etc/identity-agent/config.yaml", c.ConfigPath))
	require.NotContains(t, string(got), "Type=notify-reload")
	fi, err := os.Stat(SystemdUnitPath)
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o644), fi.Mode().Perm())
	require.Contains(t, calls(), "enable identity-agent.service\ndaemon-reload\n")
	for _, d := range c.OutputDirs {
		fi, err := os.Stat(d)
		require.NoError(t, err)
		require.Equal(t, fs.ModeDir|0o755, fi.Mode())
	}
	require.ErrorContains(t, EnsureDirs(OutputDir("/mnt/ia/redis", "root", "")), "is owned by uid")

	// Same config again: nothing to do. A changed config: replaced.
	res, err = Install(c)
	require.NoError(t, err)
	require.False(t, res.Changed)
	c.OutputDirs = append(c.OutputDirs, "/mnt/ia/uvicorn")
	res, err = Install(c)
	require.NoError(t, err)
	require.True(t, res.Changed)
	got, err = os.ReadFile(SystemdUnitPath)
	require.NoError(t, err)
	require.Contains(t, string(got), "ReadWritePaths=/mnt/ia/uvicorn\n")

	require.NoError(t, Start())
	require.NoError(t, Restart())
	require.NoError(t, Stop())
	require.Contains(t, calls(), "start identity-agent.service\nrestart identity-agent.service\nstop identity-agent.service\n")
	st, err := Status()
	require.NoError(t, err)
	require.Equal(t, StateRunning, st)
	require.NoError(t, os.WriteFile(os.Getenv("IA_SYSTEMCTL_STATE"), []byte("inactive\n"), 0o644))
	st, err = Status()
	require.NoError(t, err)
	require.Equal(t, StateStopped, st)

	require.NoError(t, Uninstall())
	_, err = os.Stat(SystemdUnitPath)
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.True(t, strings.HasSuffix(calls(), "disable identity-agent.service\ndaemon-reload\n"), calls())

	// A missing account is named with the command that creates it.
	c.User, c.Group = "ia-test-missing", "ia-test-missing"
	_, err = Install(c)
	require.ErrorContains(t, err, `user "ia-test-missing" does not exist; create it with: useradd --system`)
}
