package service

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRenderSystemdUnitFromConfig(t *testing.T) {
	unit, err := RenderSystemdUnit(InstallConfig{
		ConfigPath:        "/etc/ia/agent.yaml",
		User:              "svc-ia",
		BinaryPath:        "/opt/ia/bin/identity-agent",
		OutputDirs:        []string{"/etc/redis/tls", "/etc/traefik/ia", "/etc/redis/tls/sub", "/etc/redis/tls"},
		WorkloadAPISocket: "unix:///tmp/spire-agent/public/api.sock",
		ExtraCapabilities: []string{"kill", "CAP_NET_BIND_SERVICE"},
	})
	require.NoError(t, err)
	s := string(unit)
	require.Contains(t, s, "\nExecStart=/opt/ia/bin/identity-agent run --config /etc/ia/agent.yaml\n")
	require.Contains(t, s, "\nExecStartPre=+/opt/ia/bin/identity-agent service prepare --config /etc/ia/agent.yaml --user svc-ia\n")
	require.Contains(t, s, "\nUser=svc-ia\nGroup=svc-ia\n")
	// Sorted, deduplicated, nested dir folded into its parent.
	require.Contains(t, s, "\nProtectSystem=strict\nReadWritePaths=/etc/redis/tls\nReadWritePaths=/etc/traefik/ia\n# The Workload API")
	require.Equal(t, 2, strings.Count(s, "ReadWritePaths="))
	require.Contains(t, s, "\nBindReadOnlyPaths=-/tmp/spire-agent/public\n")
	require.Contains(t, s, "\nCapabilityBoundingSet=CAP_CHOWN CAP_KILL CAP_NET_BIND_SERVICE\n")
	require.Contains(t, s, "\nAmbientCapabilities=CAP_CHOWN CAP_KILL CAP_NET_BIND_SERVICE\n")
	require.Contains(t, s, "# CAP_KILL: signal reloads of processes of another user.\n")
	require.Contains(t, s, "\nType=notify\n")
	require.Contains(t, s, "\nRestart=always\n")
}

func TestRenderRejectsBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    InstallConfig
		want string
	}{
		{"relative config", InstallConfig{ConfigPath: "agent.yaml"}, `config path "agent.yaml" must be an absolute path`},
		{"space in binary", InstallConfig{BinaryPath: "/opt/my agent/ia"}, `binary path "/opt/my agent/ia"`},
		{"specifier", InstallConfig{OutputDirs: []string{"/etc/%n"}}, `output dir "/etc/%n"`},
		{"unclean", InstallConfig{OutputDirs: []string{"/etc/x/../y"}}, `is not clean (want "/etc/y")`},
		{"private tmp", InstallConfig{OutputDirs: []string{"/tmp/ia/redis"}}, `output dir "/tmp/ia/redis" is under /tmp`},
		{"home", InstallConfig{OutputDirs: []string{"/home/bob/certs"}}, `is under /home`},
		{"root dir", InstallConfig{OutputDirs: []string{"/"}}, `whole file system`},
		{"root user", InstallConfig{User: "root"}, `user "root": the service is hardened`},
		{"bad user", InstallConfig{User: "Bob Smith"}, `user "Bob Smith" is not a valid`},
		{"cap", InstallConfig{ExtraCapabilities: []string{"CAP_SYS_ADMIN"}}, `capability "CAP_SYS_ADMIN" is not one`},
		{"socket", InstallConfig{WorkloadAPISocket: "unix://relative.sock"}, `workload API socket "unix://relative.sock"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := RenderSystemdUnit(tc.c)
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, err.Error(), "\n")
		})
	}
}

// stageRoot builds a root directory systemd-analyze can verify a unit in:
// the distribution's units (for dependencies such as network-online.target)
// and an executable at the unit's binary path.
func stageRoot(t *testing.T, binary string) string {
	t.Helper()
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "usr/lib/systemd"), 0o755))
	out, err := exec.Command("cp", "-a", "/usr/lib/systemd/system", filepath.Join(root, "usr/lib/systemd/")).CombinedOutput()
	require.NoError(t, err, "%s", out)
	bin := filepath.Join(root, binary)
	require.NoError(t, os.MkdirAll(filepath.Dir(bin), 0o755))
	require.NoError(t, os.WriteFile(bin, []byte("#!/bin/sh\nexit 0\n"), 0o755))
	return root
}

func needAnalyze(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed (apt-get install systemd): unit not verified")
	}
	if _, err := os.Stat("/usr/lib/systemd/system/multi-user.target"); err != nil {
		t.Skip("no systemd units in /usr/lib/systemd/system to verify against")
	}
}

func analyze(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	cmd := exec.Command("systemd-analyze", args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// TestSystemdAnalyzeVerify renders units into a temp root and has systemd
// check them. Warnings (unknown keys, bad values) fail the test too:
// systemd-analyze only prints them and exits 0.
func TestSystemdAnalyzeVerify(t *testing.T) {
	needAnalyze(t)
	for name, c := range map[string]InstallConfig{
		"reference": ReferenceConfig("linux"),
		"custom": {
			BinaryPath: "/opt/ia/identity-agent", ConfigPath: "/etc/ia/config.yaml", User: "svc-ia",
			OutputDirs:        []string{"/etc/redis/tls", "/srv/traefik/certs"},
			WorkloadAPISocket: "unix:///tmp/spire-agent/public/api.sock",
			ExtraCapabilities: []string{"CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_FOWNER"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			root := stageRoot(t, c.BinaryPath)
			path, err := WriteSystemdUnit(root, c)
			require.NoError(t, err)
			stdout, stderr, err := analyze(t, "verify", "--man=no", "--root="+root, path)
			require.NoError(t, err, "systemd-analyze verify %s:\n%s%s", path, stdout, stderr)
			require.Empty(t, strings.TrimSpace(stderr), "systemd-analyze verify warnings")
		})
	}
	t.Run("catches mistakes", func(t *testing.T) {
		// The check above is only worth something if verify complains about
		// a broken unit: a missing binary here.
		root := stageRoot(t, "/usr/local/bin/other")
		path, err := WriteSystemdUnit(root, ReferenceConfig("linux"))
		require.NoError(t, err)
		_, stderr, err := analyze(t, "verify", "--man=no", "--root="+root, path)
		require.Error(t, err)
		require.Contains(t, stderr, "is not executable")
	})
}

var exposureRE = regexp.MustCompile(`Overall exposure level for identity-agent\.service: ([0-9.]+) (\w+)`)

// TestSystemdSecurityScore keeps the unit in systemd's "OK" band or better,
// also with every optional capability added.
func TestSystemdSecurityScore(t *testing.T) {
	needAnalyze(t)
	all := ReferenceConfig("linux")
	all.ExtraCapabilities = []string{"CAP_FOWNER", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_DAC_OVERRIDE"}
	all.WorkloadAPISocket = "unix:///tmp/spire-agent/public/api.sock"
	for name, c := range map[string]InstallConfig{"reference": ReferenceConfig("linux"), "all-extras": all} {
		t.Run(name, func(t *testing.T) {
			root := stageRoot(t, DefaultBinaryPath)
			path, err := WriteSystemdUnit(root, c)
			require.NoError(t, err)
			stdout, stderr, err := analyze(t, "security", "--offline=true", "--root="+root, "--no-pager", path)
			// security exits non-zero only above --threshold (default 100).
			require.NoError(t, err, "%s%s", stdout, stderr)
			m := exposureRE.FindStringSubmatch(stdout + stderr)
			require.NotNil(t, m, "no exposure line in:\n%s%s", stdout, stderr)
			score, err := strconv.ParseFloat(m[1], 64)
			require.NoError(t, err)
			t.Logf("systemd-analyze security --offline=true: %s %s", m[1], m[2])
			require.LessOrEqual(t, score, 4.9, "exposure above the OK band:\n%s", stdout)
		})
	}
}

// plist is a minimal property-list reader: enough to check the keys and
// value types launchd will see (plutil is macOS-only).
func parsePlist(t *testing.T, data []byte) map[string]any {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(data))
	d.Strict = true
	var value func(start xml.StartElement) any
	value = func(start xml.StartElement) any {
		switch start.Name.Local {
		case "string", "integer", "key":
			var s string
			require.NoError(t, d.DecodeElement(&s, &start))
			if start.Name.Local == "integer" {
				n, err := strconv.Atoi(s)
				require.NoError(t, err)
				return n
			}
			return s
		case "true", "false":
			require.NoError(t, d.Skip())
			return start.Name.Local == "true"
		case "array", "dict":
			var items []any
			for {
				tok, err := d.Token()
				require.NoError(t, err)
				switch tk := tok.(type) {
				case xml.StartElement:
					items = append(items, value(tk))
				case xml.EndElement:
					if start.Name.Local == "array" {
						return items
					}
					m := map[string]any{}
					require.Zero(t, len(items)%2, "dict with odd number of items")
					for i := 0; i < len(items); i += 2 {
						k, ok := items[i].(string)
						require.True(t, ok, "dict key %v is not a <key>", items[i])
						_, dup := m[k]
						require.False(t, dup, "duplicate key %s", k)
						m[k] = items[i+1]
					}
					return m
				}
			}
		}
		t.Fatalf("unexpected plist element <%s>", start.Name.Local)
		return nil
	}
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			t.Fatal("no <plist><dict>")
		}
		require.NoError(t, err)
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "plist" {
			tok, err = d.Token()
			for err == nil {
				if se, ok := tok.(xml.StartElement); ok {
					require.Equal(t, "dict", se.Name.Local)
					m, _ := value(se).(map[string]any)
					return m
				}
				tok, err = d.Token()
			}
			require.NoError(t, err)
		}
	}
}

func TestLaunchdPlist(t *testing.T) {
	data, err := os.ReadFile(referencePlist)
	require.NoError(t, err)
	m := parsePlist(t, data)
	require.Equal(t, LaunchdName, m["Label"])
	require.Equal(t, []any{DefaultBinaryPath, "run", "--config", DefaultDarwinConfigPath}, m["ProgramArguments"])
	require.Equal(t, true, m["KeepAlive"])
	require.Equal(t, true, m["RunAtLoad"])
	require.Equal(t, DefaultDarwinUser, m["UserName"])
	require.Equal(t, DefaultDarwinLogDir+"/identity-agent.out.log", m["StandardOutPath"])
	require.Equal(t, DefaultDarwinLogDir+"/identity-agent.err.log", m["StandardErrorPath"])
	require.Equal(t, 0o077, m["Umask"])

	custom, err := RenderLaunchdPlist(InstallConfig{ConfigPath: "/opt/ia/ollama.yaml", User: "_ia", LogDir: "/var/log/ia"})
	require.NoError(t, err)
	m = parsePlist(t, custom)
	require.Equal(t, []any{DefaultBinaryPath, "run", "--config", "/opt/ia/ollama.yaml"}, m["ProgramArguments"])
	require.Equal(t, "_ia", m["UserName"])
	require.Equal(t, "/var/log/ia/identity-agent.err.log", m["StandardErrorPath"])
}

// reloadLines are the unit's reload lines on every systemd version: the
// verdict of `systemctl reload` is ExecReload='s exit status, which
// `identity-agent reload --pid` makes 2 when the agent refused the file.
// Type=notify-reload (253+) would end the job on the agent's READY=1, which
// cannot carry a refusal (issue 19, bug 2).
const reloadLines = "\nType=notify\nExecReload=/usr/local/bin/identity-agent reload --config /etc/identity-agent/config.yaml --pid $MAINPID\nNotifyAccess=main\n"

func TestRenderedUnitReloadVerdictFromExecReload(t *testing.T) {
	unit, err := RenderSystemdUnit(ReferenceConfig("linux"))
	require.NoError(t, err)
	require.Contains(t, string(unit), reloadLines)
	require.NotContains(t, string(unit), "Type=notify-reload")
	require.NotContains(t, string(unit), "ReloadSignal=")
}
