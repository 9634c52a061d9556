package admin

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"
)

// Report is what /status returns.
type Report struct {
	Version             string      `json:"version"`
	Now                 time.Time   `json:"now"`
	StartedAt           time.Time   `json:"started_at"`
	Ready               bool        `json:"ready"`
	ExpiryWindowSeconds float64     `json:"expiry_window_seconds"`
	WorkloadAPI         WorkloadAPI `json:"workload_api"`
	SVIDs               []SVID      `json:"svids"`
	Outputs             []Output    `json:"outputs"`
	Proxies             []Proxy     `json:"proxies,omitempty"`
}

// WorkloadAPI is the state of the agent's Workload API connection.
type WorkloadAPI struct {
	Address    string    `json:"address"`
	Connected  bool      `json:"connected"`
	LastUpdate time.Time `json:"last_update"`
	LastError  string    `json:"last_error,omitempty"`
	Reconnects uint64    `json:"reconnects"`
}

// SVID is one X.509-SVID the agent holds.
type SVID struct {
	SpiffeID string    `json:"spiffe_id"`
	Hint     string    `json:"hint,omitempty"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
}

// Output is one output directory's state.
type Output struct {
	Name            string    `json:"name"`
	Files           []string  `json:"files"`
	SpiffeID        string    `json:"spiffe_id,omitempty"`
	Serial          string    `json:"serial,omitempty"`
	NotAfter        time.Time `json:"not_after,omitzero"`
	LastWrite       time.Time `json:"last_write,omitzero"`
	LastWriteError  string    `json:"last_write_error,omitempty"`
	LastReload      time.Time `json:"last_reload,omitzero"`
	LastReloadError string    `json:"last_reload_error,omitempty"`
}

// Proxy is one proxy's identity and counters.
type Proxy struct {
	Name   string          `json:"name"`
	Mode   string          `json:"mode"`
	Listen string          `json:"listen"`
	Target string          `json:"target"`
	Stats  json.RawMessage `json:"stats,omitempty"`
}

// Severity follows the monitoring-plugin convention; its value is the exit code.
type Severity int

// Severities, in order.
const (
	OK       Severity = 0
	Warning  Severity = 1
	Critical Severity = 2
	Unknown  Severity = 3
)

func (s Severity) String() string {
	switch s {
	case OK:
		return "OK"
	case Warning:
		return "WARNING"
	case Critical:
		return "CRITICAL"
	default:
		return "UNKNOWN"
	}
}

// Evaluate grades a report. CRITICAL: no SVID yet, or an SVID (held or on
// disk) has expired. WARNING: the Workload API is unreachable, an SVID
// expires within the expiry window, or an output's last write or reload
// failed. Reasons are sorted, one per problem.
func Evaluate(r Report) (Severity, []string) {
	sev := OK
	var reasons []string
	raise := func(s Severity, format string, args ...any) {
		if s > sev {
			sev = s
		}
		reasons = append(reasons, fmt.Sprintf(format, args...))
	}
	window := time.Duration(r.ExpiryWindowSeconds * float64(time.Second))
	now := r.Now
	if now.IsZero() {
		now = time.Now()
	}
	if len(r.SVIDs) == 0 {
		raise(Critical, "no X.509-SVID received from the Workload API yet")
	}
	if !r.WorkloadAPI.Connected {
		msg := "Workload API " + r.WorkloadAPI.Address + " unreachable"
		if r.WorkloadAPI.LastError != "" {
			msg += ": " + r.WorkloadAPI.LastError
		}
		raise(Warning, "%s", msg)
	}
	checkExpiry := func(what string, notAfter time.Time) {
		if notAfter.IsZero() {
			return
		}
		left := notAfter.Sub(now)
		switch {
		case left <= 0:
			raise(Critical, "%s expired %s ago", what, (-left).Round(time.Second))
		case left < window:
			raise(Warning, "%s expires in %s (expiry window %s)", what, left.Round(time.Second), window)
		}
	}
	for _, s := range r.SVIDs {
		checkExpiry("SVID "+s.SpiffeID, s.NotAfter)
	}
	for _, o := range r.Outputs {
		checkExpiry("output "+o.Name+" on disk", o.NotAfter)
		if o.LastWriteError != "" {
			raise(Warning, "output %s: last write failed: %s", o.Name, o.LastWriteError)
		}
		if o.LastReloadError != "" {
			raise(Warning, "output %s: last reload failed: %s", o.Name, o.LastReloadError)
		}
	}
	sort.Strings(reasons)
	return sev, reasons
}
