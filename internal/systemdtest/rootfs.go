//go:build linux

package systemdtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Flavour is one systemd the tests boot.
type Flavour struct {
	Name    string // the argument of scripts/systemd-rootfs.sh
	Systemd int    // the major version it must boot
}

// AllFlavours are the systemd versions `make test-systemd` covers: Debian
// 12's, the first with Type=notify-reload, and Debian 13's. systemd 258+
// cannot boot on the cgroup-v1 hosts CI runs on.
func AllFlavours() []Flavour {
	return []Flavour{{"bookworm", 252}, {"bookworm-backports", 254}, {"trixie", 257}}
}

// Flavours are AllFlavours, or those named in the comma-separated list
// sel ($IDENTITY_AGENT_SYSTEMD_FLAVOURS).
func Flavours(sel string) ([]Flavour, error) {
	all := AllFlavours()
	if strings.TrimSpace(sel) == "" {
		return all, nil
	}
	var out []Flavour
	for _, name := range strings.Split(sel, ",") {
		name = strings.TrimSpace(name)
		found := false
		for _, f := range all {
			if f.Name == name {
				out, found = append(out, f), true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown systemd flavour %q (bookworm, bookworm-backports, trixie)", name)
		}
	}
	return out, nil
}

// Rootfs returns the cached root file system of f, building it first if
// needed (scripts/systemd-rootfs.sh: a debootstrap from the Debian mirror,
// once per recipe). Its progress lines go to logf.
func Rootfs(repo string, f Flavour, logf func(string, ...any)) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, filepath.Join(repo, "scripts", "systemd-rootfs.sh"), f.Name)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return "", fmt.Errorf("scripts/systemd-rootfs.sh %s: %w\n%s", f.Name, err, errb.String())
	}
	if s := strings.TrimSpace(errb.String()); s != "" {
		logf("%s (%v)", s, time.Since(start).Round(time.Second))
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	dir := lines[len(lines)-1]
	if _, err := os.Lstat(filepath.Join(dir, "sbin", "init")); err != nil {
		return "", fmt.Errorf("scripts/systemd-rootfs.sh %s: %q has no /sbin/init", f.Name, dir)
	}
	return dir, nil
}
