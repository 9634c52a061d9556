package rotation

import (
	"time"

	"github.com/identity-agent/identity-agent/pkg/svid"
)

// State is a point-in-time view of the Manager for `identity-agent status`
// and the admin endpoint. It is a copy: callers may keep and mutate it.
type State struct {
	// WorkloadAPI is the Source's connection to the Workload API.
	WorkloadAPI svid.ConnStatus `json:"workload_api"`
	// ExpiryRule says when an SVID counts as overdue for rotation (the
	// rule behind every Expiry below), e.g. "expiry window 10m0s".
	ExpiryRule string        `json:"expiry_rule"`
	Outputs    []OutputState `json:"outputs"`
	// SVIDs are every X.509-SVID the Workload API currently offers.
	SVIDs []SVIDState `json:"svids"`
}

// OutputState describes one output: what is on disk and how the last
// write and reload went.
type OutputState struct {
	Name string `json:"name"`
	Dir  string `json:"dir"`
	// Files are the user-visible base names this output maintains in Dir.
	Files []string `json:"files"`
	// LastWrite is when the files last changed on disk (a rotation or a
	// guard restore); LastWriteError is the last failure to produce or
	// write them, cleared by the next success.
	LastWrite       time.Time `json:"last_write,omitzero"`
	LastWriteError  string    `json:"last_write_error,omitempty"`
	LastReload      time.Time `json:"last_reload,omitzero"`
	LastReloadError string    `json:"last_reload_error,omitempty"`
	// SpiffeID, Serial, NotBefore and NotAfter describe the X.509-SVID on
	// disk (the last good one written), not the one the Workload API
	// offers now; Expiry grades it (see ExpiryOf), "" when none is.
	SpiffeID  string    `json:"spiffe_id,omitempty"`
	Serial    string    `json:"serial,omitempty"`
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	Expiry    Expiry    `json:"expiry,omitempty"`
	// JWT describes the JWT-SVID files on disk.
	JWT []JWTState `json:"jwt,omitempty"`
	// Verify is the last verified-reload check, when the output has one.
	Verify *VerifyState `json:"verify,omitempty"`
	// Rotations counts writes that changed the files.
	Rotations uint64 `json:"rotations"`
}

// Healthy reports that files were written, the last write and reload
// succeeded and the SVID on disk (if any) has not expired. The status
// command grades more finely (admin.Evaluate); this is the library's
// one-bit summary.
func (o OutputState) Healthy() bool {
	return !o.LastWrite.IsZero() && o.LastWriteError == "" && o.LastReloadError == "" && o.Expiry != ExpiryExpired
}

// JWTState describes one JWT-SVID token file.
type JWTState struct {
	File      string    `json:"file"`
	Audience  []string  `json:"audience"`
	Expiry    time.Time `json:"expiry,omitzero"`
	NextFetch time.Time `json:"next_fetch,omitzero"`
	LastError string    `json:"last_error,omitempty"`
}

// SVIDState describes one X.509-SVID offered by the Workload API.
type SVIDState struct {
	SpiffeID  string    `json:"spiffe_id"`
	Hint      string    `json:"hint,omitempty"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Expiry    Expiry    `json:"expiry"`
}
