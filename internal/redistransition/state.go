package redistransition

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// State is the transition state file (JSON). The running agent's Sampler
// and the `redis transition` commands both update it, under an flock on
// "<file>.lock", each write atomic (temp file, fsync, rename, fsync dir),
// so the plaintext-free window survives agent restarts.
type State struct {
	Version int `json:"version"`
	// Phase is the last phase reached with Advance/Rollback. The server's
	// settings tell A, B/C and D apart; only B vs C comes from here.
	Phase      Phase     `json:"phase,omitempty"`
	PhaseSince time.Time `json:"phase_since,omitzero"`
	// History holds one entry per applied advance, newest last; Rollback
	// pops it to restore the settings that were there before.
	History []Step      `json:"history,omitempty"`
	Sample  SampleState `json:"sample"`
}

// Step is one applied advance.
type Step struct {
	From Phase     `json:"from"`
	To   Phase     `json:"to"`
	At   time.Time `json:"at"`
	// Previous is CONFIG GET of every setting the step changed, before it.
	// requirepass is never stored: see PasswordWasSet.
	Previous map[string]string `json:"previous,omitempty"`
	// PasswordWasSet records that requirepass was set before the step; a
	// rollback restores it from the configured password_file.
	PasswordWasSet bool `json:"password_was_set,omitempty"`
	Rewrote        bool `json:"config_rewritten,omitempty"`
}

// SampleState is what the Sampler keeps between samples and restarts.
type SampleState struct {
	// PlaintextZeroSince starts the current run of samples that saw no
	// connection on the plaintext port; zero while one is seen.
	PlaintextZeroSince time.Time  `json:"plaintext_zero_since,omitzero"`
	LastSample         time.Time  `json:"last_sample,omitzero"`
	LastPlaintextSeen  time.Time  `json:"last_plaintext_seen,omitzero"`
	Last               ConnCounts `json:"last"`
	Samples            uint64     `json:"samples"`
	// Phase is the phase the server's settings showed at LastSample,
	// derived as `redis transition status` derives it (A before any
	// advance, where State.Phase is still empty); empty when the settings
	// fit no phase.
	Phase Phase `json:"phase,omitempty"`
}

// CurrentPhase is the phase as last known: the one an advance or rollback
// reached, or the one the sampler saw if it sampled since (the server may
// have been changed by hand; before the first advance only the sampler
// knows it). `status` reports it, so that it agrees with `redis transition
// status`, which reads the server itself.
func (s State) CurrentPhase() Phase {
	if s.Sample.Phase != "" && !s.Sample.LastSample.Before(s.PhaseSince) {
		return s.Sample.Phase
	}
	return s.Phase
}

const stateVersion = 1

// LoadState reads path; a missing file is an empty state.
func LoadState(path string) (State, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return State{Version: stateVersion}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("redis state file: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return State{}, fmt.Errorf("redis state file %s: %w", path, err)
	}
	if s.Version != stateVersion {
		return State{}, fmt.Errorf("redis state file %s: version %d, want %d", path, s.Version, stateVersion)
	}
	return s, nil
}

// updateState runs f on the current state under the lock and writes the
// result atomically. f's error aborts without writing.
func updateState(path string, f func(*State) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("redis state file: %w", err)
	}
	lf, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("redis state file lock: %w", err)
	}
	defer func() { _ = lf.Close() }()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("redis state file lock %s: %w", lf.Name(), err)
	}
	defer func() { _ = syscall.Flock(int(lf.Fd()), syscall.LOCK_UN) }()
	s, err := LoadState(path)
	if err != nil {
		return err
	}
	if err := f(&s); err != nil {
		return err
	}
	s.Version = stateVersion
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'), 0o600)
}

func writeFileAtomic(path string, data []byte, mode fs.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("redis state file: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("redis state file %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("redis state file %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("redis state file %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("redis state file %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("redis state file %s: %w", path, err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
