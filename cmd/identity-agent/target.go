package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/identity-agent/identity-agent/internal/admin"
	"github.com/identity-agent/identity-agent/internal/config"
)

// Finding the running agent. Every command that talks to the agent
// (`status`, `reload`, the unit's ExecReload=) follows one rule: it
// reaches the agent that runs the given config file (and, with --pid, is
// that process), never whichever agent the socket named in an edited file
// leads to. admin.socket cannot change while the agent runs, so after an
// edit of it the file names a socket nobody serves, or another agent's.
//
// Candidates, in order: the running agent's own record (runningRecord),
// the socket the file names, $IDENTITY_AGENT_ADMIN, the platform default.
// A candidate is the one only when the agent behind it reports the same
// config file (compared after filepath.Abs and EvalSymlinks) and, with
// --pid, the kernel says that pid serves the socket (SO_PEERCRED).

// runningRecordName is the file, in the service's runtime directory, in
// which the agent records how to reach it.
const runningRecordName = "agent.json"

// envRuntimeDir is set by systemd (RuntimeDirectory=) for the service's
// processes, ExecReload= included.
const envRuntimeDir = "RUNTIME_DIRECTORY"

// systemRuntimeDir is what RuntimeDirectory=identity-agent makes for the
// system unit: where a command run from a shell finds the record.
const systemRuntimeDir = "/run/identity-agent"

// runningRecord is what a running agent writes to its runtime directory.
type runningRecord struct {
	PID         int    `json:"pid"`
	Config      string `json:"config"`
	AdminSocket string `json:"admin_socket"`
}

// writeRunningRecord records the agent under systemd ($RUNTIME_DIRECTORY);
// outside it there is no directory that is both the agent's and known to
// its clients, and they fall back to the other candidates. The returned
// func removes the record.
func writeRunningRecord(cfgPath, socket string) (func(), error) {
	dir := os.Getenv(envRuntimeDir)
	if dir == "" || strings.Contains(dir, ":") {
		return func() {}, nil
	}
	b, err := json.Marshal(runningRecord{PID: os.Getpid(), Config: canonicalPath(cfgPath), AdminSocket: socket})
	if err != nil {
		return nil, err
	}
	p := filepath.Join(dir, runningRecordName)
	tmp := p + ".tmp"
	// 0644: a socket path is no secret; the directory (0755, the agent's)
	// keeps anyone else from writing it.
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("record the admin socket: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("record the admin socket: %w", err)
	}
	return func() { _ = os.Remove(p) }, nil
}

// readRunningRecord reads the record from $RUNTIME_DIRECTORY or, on Linux,
// the system unit's runtime directory. A record anyone but its directory's
// owner (or root) could have written is ignored.
func readRunningRecord() (runningRecord, bool) {
	dirs := []string{os.Getenv(envRuntimeDir)}
	if runtime.GOOS == "linux" {
		dirs = append(dirs, systemRuntimeDir)
	}
	for _, dir := range dirs {
		if dir == "" || strings.Contains(dir, ":") {
			continue
		}
		p := filepath.Join(dir, runningRecordName)
		if !trustedFile(dir, p) {
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var r runningRecord
		if json.Unmarshal(data, &r) == nil && r.AdminSocket != "" {
			return r, true
		}
	}
	return runningRecord{}, false
}

// trustedFile: dir and file are not writable by group or others, and the
// file belongs to root or to dir's owner.
func trustedFile(dir, p string) bool {
	di, err := os.Stat(dir)
	if err != nil || di.Mode().Perm()&0o022 != 0 {
		return false
	}
	fi, err := os.Lstat(p)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o022 != 0 {
		return false
	}
	du, fu, ok := owners(di, fi)
	return ok && (fu == 0 || fu == du)
}

// canonicalPath is p made absolute and, where it exists, with symlinks
// resolved, so two spellings of one file compare equal.
func canonicalPath(p string) string {
	if p == "" {
		return ""
	}
	if abs, err := filepath.Abs(p); err == nil {
		p = abs
	}
	if real, err := filepath.EvalSymlinks(p); err == nil {
		p = real
	}
	return filepath.Clean(p)
}

// notTheAgentsConfigError: the agent reached runs another file.
type notTheAgentsConfigError struct{ file, socket, runs string }

func (e *notTheAgentsConfigError) Error() string {
	return fmt.Sprintf("%s is not the running agent's configuration: the agent at %s runs %s (pass that file, or --admin for another agent)", e.file, e.socket, e.runs)
}

// findAgent returns the admin socket of the agent that runs cfgPath (and
// is process pid, when pid > 0) with its report. addr, when set, is used
// as given (the operator named the socket).
func findAgent(ctx context.Context, addr, cfgPath string, pid int) (string, admin.Report, error) {
	if addr != "" || cfgPath == "" {
		target, err := statusTarget(addr)
		if err != nil {
			return "", admin.Report{}, withCode(exitUsage, err)
		}
		if pid <= 0 || addr != "" {
			r, err := admin.Fetch(ctx, target)
			return target, r, err
		}
		return pickAgent(ctx, append(recordCandidates(), target), "", pid)
	}
	cands := recordCandidates()
	if s, err := adminSocketOf(cfgPath); err == nil {
		cands = append(cands, s)
	} else if errors.Is(err, fs.ErrNotExist) {
		return "", admin.Report{}, withCode(exitUsage, err)
	}
	if env := os.Getenv(EnvAdmin); env != "" {
		cands = append(cands, env)
	}
	cands = append(cands, config.AdminSocketFor(runtime.GOOS))
	return pickAgent(ctx, cands, canonicalPath(cfgPath), pid)
}

func recordCandidates() []string {
	if r, ok := readRunningRecord(); ok {
		return []string{r.AdminSocket}
	}
	return nil
}

// pickAgent tries each distinct candidate; see the rule above.
func pickAgent(ctx context.Context, cands []string, file string, pid int) (string, admin.Report, error) {
	var (
		tried    []string
		mismatch error
		firstErr error
	)
	for _, c := range cands {
		c = strings.TrimPrefix(c, "unix://")
		if c == "" || slices.Contains(tried, c) {
			continue
		}
		tried = append(tried, c)
		r, err := admin.Fetch(ctx, c)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if pid > 0 {
			served, err := adminServerPID(ctx, c)
			if err != nil || served != pid {
				continue
			}
		}
		if file != "" && canonicalPath(r.Config.Path) != file {
			if mismatch == nil {
				mismatch = &notTheAgentsConfigError{file: file, socket: c, runs: r.Config.Path}
			}
			continue
		}
		return c, r, nil
	}
	if mismatch != nil {
		return "", admin.Report{}, withCode(exitUsage, mismatch)
	}
	who := "the agent"
	if pid > 0 {
		who = fmt.Sprintf("the agent with pid %d", pid)
	}
	if file != "" {
		who += " running " + file
	}
	err := fmt.Errorf("%s: no admin socket answers for it (tried %s)", who, strings.Join(tried, ", "))
	if firstErr != nil {
		err = fmt.Errorf("%w (tried %s)", firstErr, strings.Join(tried, ", "))
	}
	return "", admin.Report{}, err
}

// unparsableConfig is the problem ("FILE:LINE: field: problem", as
// `config validate` prints it) of a config file that is not YAML at all,
// or nil. Such a file cannot be what the agent runs: the agent keeps the
// version it applied before the edit, and is still to be found (findAgent
// reads admin.socket leniently for that).
func unparsableConfig(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil // findAgent reports an unreadable file
	}
	var root yaml.Node
	if yaml.Unmarshal(data, &root) == nil {
		return nil
	}
	_, err = config.Parse(path, data, os.Getenv)
	return err
}
