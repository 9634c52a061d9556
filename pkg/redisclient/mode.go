package redisclient

import (
	"fmt"
	"os"
	"strings"
)

// Mode is how a client authenticates to Redis during the password → mTLS
// transition. It is read from config or an environment variable so a
// service changes path with a restart and no code change.
type Mode string

const (
	// ModeDisabled: password on the plaintext port, no TLS (phase A).
	ModeDisabled Mode = "disabled"
	// ModeDualAuth: mTLS on the TLS port first; password on the plaintext
	// port only while the TLS port is unreachable (phases B and C). A TLS
	// authentication failure is returned, not fallen back on.
	ModeDualAuth Mode = "dual_auth"
	// ModeTLSOnly: mTLS on the TLS port, never plaintext (phase D).
	ModeTLSOnly Mode = "tls_only"
)

// DefaultModeEnv is the environment variable conventionally used for the mode.
const DefaultModeEnv = "IDENTITY_AGENT_REDIS_MODE"

// ParseMode accepts the three mode names (case-insensitive, "-" or "_").
func ParseMode(s string) (Mode, error) {
	m := Mode(strings.ReplaceAll(strings.ToLower(strings.TrimSpace(s)), "-", "_"))
	switch m {
	case ModeDisabled, ModeDualAuth, ModeTLSOnly:
		return m, nil
	}
	return "", fmt.Errorf("redis mode %q: want one of disabled, dual_auth, tls_only", s)
}

// ModeFromEnv returns the mode named by environment variable name, or def
// when it is unset or empty. An unknown value is an error naming the variable.
func ModeFromEnv(name string, def Mode) (Mode, error) {
	v, ok := os.LookupEnv(name)
	if !ok || strings.TrimSpace(v) == "" {
		if _, err := ParseMode(string(def)); err != nil {
			return "", fmt.Errorf("default for $%s: %w", name, err)
		}
		return def, nil
	}
	m, err := ParseMode(v)
	if err != nil {
		return "", fmt.Errorf("$%s: %w", name, err)
	}
	return m, nil
}

func (m Mode) String() string { return string(m) }
