package config

import (
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole agent configuration.
type Config struct {
	WorkloadAPI WorkloadAPI `yaml:"workload_api"`
	Admin       Admin       `yaml:"admin"`
	Log         Log         `yaml:"log"`
	Rotation    Rotation    `yaml:"rotation"`
	Outputs     []Output    `yaml:"outputs"`
	Proxies     []Proxy     `yaml:"proxies"`
	Redis       *Redis      `yaml:"redis"`

	// AllowEmpty accepts a file with no outputs and no proxies. Without
	// it such a file is refused: a file cut short while an editor writes
	// it is often still valid YAML, and applied as a reload it would stop
	// every output and proxy at once.
	AllowEmpty bool `yaml:"allow_empty"`

	// Path is the file the config was read from (not a YAML key).
	Path string `yaml:"-"`
	// root is the parsed document, kept for the line numbers of problems.
	root *yaml.Node
}

// WorkloadAPI says where the SPIFFE Workload API is.
type WorkloadAPI struct {
	// Socket is "unix:///path"; default $SPIFFE_ENDPOINT_SOCKET.
	Socket string `yaml:"socket"`
	// RetryMax caps the backoff between reconnection attempts; default
	// svid.DefaultRetryMax. A unix socket that reappears is reconnected to
	// at once regardless.
	RetryMax Duration `yaml:"retry_max"`
}

// Admin is the local endpoint `identity-agent status` and Prometheus read.
type Admin struct {
	// Socket is a unix socket path (mode 0600). Default AdminSocketFor(GOOS).
	Socket string `yaml:"socket"`
	// MetricsListen optionally also serves /metrics on a loopback TCP
	// address for a Prometheus scraper that cannot read unix sockets.
	MetricsListen string `yaml:"metrics_listen"`
}

// Log configures zap.
type Log struct {
	Level  string `yaml:"level"`  // debug|info|warn|error; default info
	Format string `yaml:"format"` // json|console; default json
}

// Rotation tunes how outputs are written.
type Rotation struct {
	// ExpiryWindow: status turns WARNING when an SVID (held or on disk)
	// expires within it: its rotation is overdue. Unset (0): when less
	// than a third of the SVID's lifetime is left (SPIRE rotates at half).
	ExpiryWindow Duration `yaml:"expiry_window"`
	// Debounce coalesces bursts of Workload API pushes. Default 100ms.
	Debounce Duration `yaml:"debounce"`
	// RetryMin/RetryMax bound the backoff of failed writes and reloads.
	RetryMin Duration `yaml:"retry_min"`
	RetryMax Duration `yaml:"retry_max"`
	// Guard rewrites files deleted or altered behind the agent's back. Default true.
	Guard *bool `yaml:"guard"`
}

// Output is one directory of material for one consumer.
type Output struct {
	Name  string `yaml:"name"`
	Dir   string `yaml:"dir"`
	Owner Owner  `yaml:"owner"`

	// Which X.509-SVID: by SPIFFE ID, by hint, or neither for the first.
	SpiffeID string `yaml:"spiffe_id"`
	Hint     string `yaml:"hint"`

	CertFile              string   `yaml:"cert_file"`
	KeyFile               string   `yaml:"key_file"`
	BundleFile            string   `yaml:"bundle_file"`
	IncludeFederated      bool     `yaml:"include_federated"`
	IntermediatesInBundle bool     `yaml:"intermediates_in_bundle"`
	CertMode              FileMode `yaml:"cert_mode"`
	KeyMode               FileMode `yaml:"key_mode"`
	BundleMode            FileMode `yaml:"bundle_mode"`

	// UnsafeWorldReadableKey allows a key_mode (or jwt mode) readable by
	// every user; without it such a mode is refused.
	UnsafeWorldReadableKey bool `yaml:"unsafe_world_readable_key"`

	JWT           []JWTFile `yaml:"jwt"`
	JWTBundleFile string    `yaml:"jwt_bundle_file"`
	JWTBundleMode FileMode  `yaml:"jwt_bundle_mode"`

	Reload []Reload `yaml:"reload"`

	// Formats: combined_file, layout, bundle_dir, pkcs12, verify (formats.go).
	Formats `yaml:",inline"`
}

// Owner of written files; empty means the agent's own user.
type Owner struct {
	User  string `yaml:"user"`
	Group string `yaml:"group"`
}

// JWTFile is one JWT-SVID written to a file.
type JWTFile struct {
	Audience []string `yaml:"audience"`
	File     string   `yaml:"file"`
	Mode     FileMode `yaml:"mode"`
}

// Proxy is one mTLS proxy.
type Proxy struct {
	Name     string `yaml:"name"`
	Mode     string `yaml:"mode"` // server | client
	SpiffeID string `yaml:"spiffe_id"`
	Hint     string `yaml:"hint"`
	Listen   string `yaml:"listen"`
	Target   string `yaml:"target"`
	HTTP     bool   `yaml:"http"`
	// RewriteHost (with http) sends the target address as Host.
	RewriteHost bool `yaml:"rewrite_host"`

	// MaxConns bounds authenticated connections (handshake done, peer
	// allowed); MaxHandshakes and MaxHandshakesPerSource bound those still
	// in the TLS handshake (see docs/PROXY.md, "Admission"). Zero: the
	// tlsproxy defaults.
	MaxConns               int      `yaml:"max_conns"`
	MaxHandshakes          int      `yaml:"max_handshakes"`
	MaxHandshakesPerSource int      `yaml:"max_handshakes_per_source"`
	HandshakeTimeout       Duration `yaml:"handshake_timeout"`
	IdleTimeout            Duration `yaml:"idle_timeout"`
	ConnectTimeout         Duration `yaml:"connect_timeout"`
	DrainTimeout           Duration `yaml:"drain_timeout"`
	// MaxConnLifetime closes an authenticated connection this long after
	// its handshake (HTTP mode: after the request in flight). Zero: no limit.
	MaxConnLifetime Duration `yaml:"max_conn_lifetime"`

	UnsafeAllowNonLoopbackPlaintext bool `yaml:"unsafe_allow_non_loopback_plaintext"`

	// Authorizers: who may connect, one kind per proxy (allow; authz.go).
	Authorizers `yaml:",inline"`
}

// Redis configures the password → mTLS transition sampler and tool.
type Redis struct {
	Transition *RedisTransition `yaml:"transition"`
}

// RedisTransition is the migration of one Redis server from password auth
// on the plaintext port to mTLS on the TLS port (phases A–D).
type RedisTransition struct {
	// Admin is the connection the agent uses for CONFIG and CLIENT LIST.
	Admin     RedisReload `yaml:"admin"`
	PlainPort int         `yaml:"plain_port"` // default redistransition.DefaultPlainPort (6379)
	TLSPort   int         `yaml:"tls_port"`   // default redistransition.DefaultTLSPort (6380)
	// TLSAddr is where the tls-ping gate dials with the agent's SVID;
	// default 127.0.0.1:<tls_port>.
	TLSAddr string `yaml:"tls_addr"`
	// SpiffeID selects the SVID the agent presents for the tls-ping gate.
	SpiffeID string `yaml:"spiffe_id"`
	// ServerID is the SPIFFE ID (or spiffe://trust-domain) the server must
	// present; default admin.server_id.
	ServerID string `yaml:"server_id"`
	// The TLS files as redis-server sees them (an output's files).
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	CACertFile string `yaml:"ca_cert_file"`
	// PasswordFile restores requirepass when rolling back from D; default
	// admin.password_file.
	PasswordFile   string        `yaml:"password_file"`
	StateFile      string        `yaml:"state_file"`
	Window         Duration      `yaml:"window"`          // plaintext-free window before D; default 24h
	SampleInterval Duration      `yaml:"sample_interval"` // CLIENT LIST sampling; default 15s
	MaxSampleGap   Duration      `yaml:"max_sample_gap"`  // a longer gap restarts the window; default 10m
	HealthChecks   []HealthCheck `yaml:"health_checks"`
}

// HealthCheck is one gate check: an HTTP GET that must answer 2xx, or a
// command (argv list) that must exit 0.
type HealthCheck struct {
	Name    string   `yaml:"name"`
	HTTP    string   `yaml:"http"`
	Exec    []string `yaml:"exec"`
	Timeout Duration `yaml:"timeout"` // default 10s for http, 30s for exec
}

// Duration is a time.Duration written as "90s", "10m", "24h".
type Duration time.Duration

// UnmarshalYAML accepts Go duration strings only, so "10" is not silently 10ns.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return lineError(n, "%q is not a duration (use e.g. 30s, 10m, 24h)", n.Value)
	}
	if v < 0 {
		return lineError(n, "duration %q is negative", n.Value)
	}
	*d = Duration(v)
	return nil
}

// D returns the time.Duration, or def when unset.
func (d Duration) D(def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return time.Duration(d)
}

// MarshalYAML writes the duration back in Go syntax.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// FileMode is a permission mode written as an octal string: "0640".
type FileMode fs.FileMode

// UnmarshalYAML reads the raw scalar as octal whether or not it was quoted,
// because YAML would otherwise read an unquoted 0640 as decimal 640 or octal
// depending on the parser. Setuid, setgid and sticky ("4755") are read too,
// so that the check of the mode (rotation.CheckMode) can refuse them by
// name instead of calling the value unreadable.
func (m *FileMode) UnmarshalYAML(n *yaml.Node) error {
	raw := strings.TrimPrefix(strings.TrimPrefix(n.Value, "0o"), "0O")
	v, err := strconv.ParseUint(raw, 8, 32)
	if err != nil || v > 0o7777 || v == 0 {
		return lineError(n, "%q is not a file mode (use an octal string such as \"0640\")", n.Value)
	}
	fm := fs.FileMode(v & 0o777)
	for bit, mode := range map[uint64]fs.FileMode{0o4000: fs.ModeSetuid, 0o2000: fs.ModeSetgid, 0o1000: fs.ModeSticky} {
		if v&bit != 0 {
			fm |= mode
		}
	}
	*m = FileMode(fm)
	return nil
}

// Or returns the mode, or def when unset.
func (m FileMode) Or(def fs.FileMode) fs.FileMode {
	if m == 0 {
		return def
	}
	return fs.FileMode(m)
}

// MarshalYAML writes the mode as an octal string.
func (m FileMode) MarshalYAML() (any, error) { return m.String(), nil }

// String is the mode as the file writes it: "0640", "4755".
func (m FileMode) String() string {
	fm := fs.FileMode(m)
	v := uint32(fm.Perm())
	for mode, bit := range map[fs.FileMode]uint32{fs.ModeSetuid: 0o4000, fs.ModeSetgid: 0o2000, fs.ModeSticky: 0o1000} {
		if fm&mode != 0 {
			v |= bit
		}
	}
	return fmt.Sprintf("%04o", v)
}

// lineError reports a bad scalar as a yaml.TypeError so that decoding goes
// on and every bad field in the file is reported at once.
func lineError(n *yaml.Node, format string, args ...any) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: ", n.Line) + fmt.Sprintf(format, args...)}}
}
