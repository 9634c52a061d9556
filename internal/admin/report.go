package admin

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/identity-agent/identity-agent/internal/redistransition"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// Report is what /status returns: the parts' own typed state, as they
// report it, and nothing recomputed. Its JSON is its struct tags.
type Report struct {
	Version string `json:"version"`
	// PID is the agent's process: `identity-agent reload` signals it when
	// no service manager runs the agent.
	PID       int       `json:"pid"`
	Now       time.Time `json:"now"`
	StartedAt time.Time `json:"started_at"`
	// Ready: the first X.509 context has arrived.
	Ready bool `json:"ready"`
	// State (inlined in the JSON): the Workload API connection, the
	// expiry rule, every output and every SVID offered.
	rotation.State
	Proxies []tlsproxy.Stats `json:"proxies,omitempty"`
	// Redis is set while a Redis transition is configured.
	Redis *Redis `json:"redis,omitempty"`
	// Config is the configuration file the agent runs with and its reloads.
	Config ConfigState `json:"config"`
	// UnknownAllowTrustDomains are proxy allow entries whose trust domain
	// has no bundle (neither ours nor federated): a WARNING.
	UnknownAllowTrustDomains []UnknownTrustDomain `json:"unknown_allow_trust_domains,omitempty"`
}

// UnknownTrustDomain is one proxy allow entry no peer can ever match.
type UnknownTrustDomain struct {
	Proxy       string   `json:"proxy"`
	Allow       string   `json:"allow"`
	TrustDomain string   `json:"trust_domain"`
	Bundles     []string `json:"bundles"`
}

// ConfigState is the configuration the agent runs and how its reloads went.
type ConfigState struct {
	Path string `json:"path"`
	// Hash is the SHA-256 of the file content in force; AppliedAt is when
	// it took effect (start, or the last successful reload).
	Hash      string    `json:"hash"`
	AppliedAt time.Time `json:"applied_at"`
	// Reloads counts reload attempts, applied or refused; a client that
	// asked for one waits for it to grow.
	Reloads          uint64        `json:"reloads"`
	LastReload       *ConfigReload `json:"last_reload,omitempty"`
	LastFailedReload *ConfigReload `json:"last_failed_reload,omitempty"`
}

// ConfigReload is one reload attempt.
type ConfigReload struct {
	At      time.Time `json:"at"`
	Hash    string    `json:"hash,omitempty"`
	Changes []string  `json:"changes,omitempty"`
	// Error is why nothing was applied; empty when it was.
	Error string `json:"error,omitempty"`
}

// Redis is the password → mTLS transition as its state file records it:
// the current phase (redistransition.State.CurrentPhase: what the last
// step reached or, if newer, what the sampler saw on the server) and the
// plaintext-port sampler's last sample.
type Redis struct {
	Phase  redistransition.Phase       `json:"phase,omitempty"`
	Sample redistransition.SampleState `json:"sample"`
	// Error is set when the state file could not be read.
	Error string `json:"error,omitempty"`
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

// Evaluate grades a report; it is the only place health is graded.
// CRITICAL: no SVID yet, or an SVID (held or on disk) has expired.
// WARNING: the Workload API is unreachable, or reachable but issuing this
// workload no identity any more (one reason per output, naming it: its
// files are kept), an SVID is overdue for rotation (rotation.ExpiryOf
// decided that in the agent), or an output's last write or reload failed.
// Reasons are sorted, one per problem.
func Evaluate(r Report) (Severity, []string) {
	sev := OK
	var reasons []string
	raise := func(s Severity, format string, args ...any) {
		if s > sev {
			sev = s
		}
		reasons = append(reasons, fmt.Sprintf(format, args...))
	}
	now := r.Now
	if now.IsZero() {
		now = time.Now()
	}
	if len(r.SVIDs) == 0 {
		raise(Critical, "no X.509-SVID received from the Workload API yet")
	}
	for _, u := range r.UnknownAllowTrustDomains {
		raise(Warning, "proxy %s: allow entry %s: no bundle for trust domain %s (have %s): no peer of it can connect", u.Proxy, u.Allow, u.TrustDomain, strings.Join(u.Bundles, ", "))
	}
	switch api := r.WorkloadAPI; {
	case api.NoIdentity && len(r.Outputs) > 0:
		// The Workload API answers, but with PermissionDenied: what an
		// operator must know is which outputs are now stale.
		for _, o := range r.Outputs {
			msg := fmt.Sprintf("output %s: SVID no longer issued: %s (Workload API %s)", o.Name, api.Reason, api.Addr)
			if !o.NotAfter.IsZero() {
				msg = fmt.Sprintf("output %s: SVID %s no longer issued: %s (Workload API %s); files kept, valid until %s",
					o.Name, o.SpiffeID, api.Reason, api.Addr, o.NotAfter.UTC().Format(time.RFC3339))
			}
			raise(Warning, "%s", msg)
		}
	case api.NoIdentity:
		raise(Warning, "Workload API %s: %s", api.Addr, api.Reason)
	case !api.Connected:
		msg := "Workload API " + api.Addr + " unreachable"
		if api.LastError != "" {
			msg += ": " + api.LastError
		}
		raise(Warning, "%s", msg)
	}
	expiry := func(what string, e rotation.Expiry, notAfter time.Time) {
		left := notAfter.Sub(now).Round(time.Second)
		switch e {
		case rotation.ExpiryExpired:
			raise(Critical, "%s expired %s ago", what, -left)
		case rotation.ExpiryOverdue:
			raise(Warning, "%s expires in %s (%s)", what, left, r.ExpiryRule)
		}
	}
	for _, s := range r.SVIDs {
		expiry("SVID "+s.SpiffeID, s.Expiry, s.NotAfter)
	}
	for _, o := range r.Outputs {
		expiry("output "+o.Name+" on disk", o.Expiry, o.NotAfter)
		if o.LastWriteError != "" {
			raise(Warning, "output %s: last write failed: %s", o.Name, o.LastWriteError)
		}
		if o.LastReloadError != "" {
			raise(Warning, "output %s: last reload failed: %s", o.Name, o.LastReloadError)
		}
	}
	if last := r.Config.LastReload; last != nil && last.Error != "" {
		raise(Warning, "config reload failed (running the configuration applied %s): %s",
			r.Config.AppliedAt.Format(time.RFC3339), last.Error)
	}
	sort.Strings(reasons)
	return sev, reasons
}
