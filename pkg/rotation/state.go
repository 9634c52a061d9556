package rotation

import "time"

// State is a point-in-time view of the Manager for `identity-agent status`
// and the admin endpoint. It is a copy: callers may keep and mutate it.
type State struct {
	// Connected reports whether the Workload API stream is up right now.
	Connected bool `json:"connected"`
	// LastUpdate is when the Source last received material.
	LastUpdate time.Time `json:"last_update,omitzero"`
	// SourceError is the Source's last connection error, if any.
	SourceError string        `json:"source_error,omitempty"`
	Outputs     []OutputState `json:"outputs"`
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
	// SpiffeID, Serial and NotAfter describe the X.509-SVID on disk (the
	// last good one written), not the one the Workload API offers now.
	SpiffeID string    `json:"spiffe_id,omitempty"`
	Serial   string    `json:"serial,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
	// JWT describes the JWT-SVID files on disk.
	JWT []JWTState `json:"jwt,omitempty"`
	// Rotations counts writes that changed the files.
	Rotations uint64 `json:"rotations"`
	// ExpiresSoon is set while the Workload API is unreachable and the
	// SVID on disk is inside the expiry window: the service will soon hold
	// an expired certificate unless the agent reconnects.
	ExpiresSoon bool `json:"expires_soon"`
	// Expired is set when the SVID on disk is past NotAfter.
	Expired bool `json:"expired"`
	// Healthy: files were written, the last write and reload succeeded
	// and the SVID on disk has not expired.
	Healthy bool `json:"healthy"`
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
	SpiffeID string    `json:"spiffe_id"`
	Hint     string    `json:"hint,omitempty"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
}
