package rotation

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/identity-agent/identity-agent/pkg/fielderr"
)

// FieldError is a problem with one field of an Output ("key_mode",
// "jwt[1].file", "reloads[0]"). It is fielderr.Error, the one type every
// pkg/ Validate uses, named here for callers of Output.Validate.
type FieldError = fielderr.Error

// Signals are the signals a signal reload may send, by name. One table for
// the parser and for messages.
var signals = map[string]syscall.Signal{
	"SIGHUP": syscall.SIGHUP, "SIGUSR1": syscall.SIGUSR1, "SIGUSR2": syscall.SIGUSR2,
	"SIGTERM": syscall.SIGTERM, "SIGINT": syscall.SIGINT, "SIGQUIT": syscall.SIGQUIT, "SIGWINCH": syscall.SIGWINCH,
}

// Defaults of the reloads, for callers that build them from a config.
const (
	// DefaultReloadSignal is what a signal reload sends when no name is given.
	DefaultReloadSignal = "SIGHUP"
	// DefaultExecTimeout bounds an exec reload (NewExecReloader's default).
	DefaultExecTimeout = defaultExecTimeout
	// DefaultSystemdAction is the systemctl verb of a systemd reload.
	DefaultSystemdAction = "reload"
)

// signalNames lists the names ParseSignal accepts, sorted.
func signalNames() []string {
	names := make([]string, 0, len(signals))
	for n := range signals {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// ParseSignal reads a signal name, "SIGHUP" or "hup" alike.
func ParseSignal(name string) (syscall.Signal, error) {
	n := strings.ToUpper(strings.TrimSpace(name))
	if !strings.HasPrefix(n, "SIG") {
		n = "SIG" + n
	}
	if s, ok := signals[n]; ok {
		return s, nil
	}
	return 0, fmt.Errorf("%q is not a supported signal (%s)", name, strings.Join(signalNames(), ", "))
}

// CheckMode is the rule for every file mode an Output writes: never
// writable by group or other, no setuid, setgid or sticky bit. A secret
// (key, token) must not be readable by other unless worldReadable says the
// operator asked for exactly that.
func CheckMode(m fs.FileMode, secret, worldReadable bool) error {
	if m == 0 {
		return errors.New("0000 writes a file nobody can read")
	}
	if m&^(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
		return fmt.Errorf("%v is not a permission mode", m)
	}
	if m&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
		return fmt.Errorf("%s sets a setuid, setgid or sticky bit; identity files never need one", octal(m))
	}
	if m&0o022 != 0 {
		// Suggest only what the checks below accept: a secret loses
		// other's read too, and a mode nobody can read is no suggestion.
		if secret && !worldReadable {
			return fmt.Errorf("%s lets group or other write the file; use 0600 or 0640", octal(m))
		}
		fix := m &^ 0o022
		if fix&0o444 == 0 {
			fix |= 0o400
		}
		return fmt.Errorf("%s lets group or other write the file; use at most %s", octal(m), octal(fix))
	}
	if secret && m&0o004 != 0 && !worldReadable {
		return fmt.Errorf("%s lets every user read a secret; use 0600 or 0640 (or set unsafe_world_readable_key: true)", octal(m))
	}
	return nil
}

// octal prints a mode the way the configuration writes it: "0640", "4755".
func octal(m fs.FileMode) string {
	v := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		v |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		v |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		v |= 0o1000
	}
	return fmt.Sprintf("%04o", v)
}

// withDefaults fills the zero modes and owner; no check, no I/O.
func (o Output) withDefaults() Output {
	if o.CertMode == 0 {
		o.CertMode = DefaultCertMode
	}
	if o.KeyMode == 0 {
		o.KeyMode = DefaultKeyMode
	}
	if o.BundleMode == 0 {
		o.BundleMode = DefaultBundleMode
	}
	if o.JWTBundleMode == 0 {
		o.JWTBundleMode = DefaultJWTBundleMode
	}
	if o.VerifyTimeout <= 0 {
		o.VerifyTimeout = DefaultVerifyTimeout
	}
	o.JWT = slices.Clone(o.JWT)
	for i := range o.JWT {
		if o.JWT[i].Mode == 0 {
			o.JWT[i].Mode = DefaultJWTMode
		}
	}
	return o
}

// Validate checks o as NewManager will, without touching the file system:
// name, dir, file names (plain, distinct, not reserved), modes (see
// CheckMode) and reloads. Every problem is reported, each as a
// *FieldError, joined. Dir may be relative here; NewManager resolves it.
func (o Output) Validate() error {
	o = o.withDefaults()
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if o.Name == "" {
		add(fielderr.Errorf("name", "is required"))
	}
	if o.Dir == "" {
		add(fielderr.Errorf("dir", "is required"))
	}
	seen := map[string]string{}
	file := func(field, name string) {
		switch {
		case name == "":
			return
		case name != filepath.Base(name) || name == "." || name == ".." || strings.ContainsRune(name, filepath.Separator):
			add(fielderr.Errorf(field, "%q must be a plain file name inside dir", name))
			return
		case strings.HasPrefix(name, ".."):
			// The atomic writer keeps its versioned directories and link
			// under names starting with "..".
			add(fielderr.Errorf(field, "%q: names starting with \"..\" are reserved", name))
			return
		}
		if prev, ok := seen[name]; ok {
			add(fielderr.Errorf(field, "%q is also used by %s", name, prev))
			return
		}
		seen[name] = field
	}
	mode := func(field string, m fs.FileMode, secret bool) {
		if err := CheckMode(m, secret, o.UnsafeWorldReadableKey); err != nil {
			add(&FieldError{Field: field, Err: err})
		}
	}
	file("cert_file", o.CertFile)
	file("key_file", o.KeyFile)
	file("bundle_file", o.BundleFile)
	file("jwt_bundle_file", o.JWTBundleFile)
	mode("cert_mode", o.CertMode, false)
	mode("key_mode", o.KeyMode, true)
	mode("bundle_mode", o.BundleMode, false)
	mode("jwt_bundle_mode", o.JWTBundleMode, false)
	for i, j := range o.JWT {
		p := fmt.Sprintf("jwt[%d]", i)
		if len(j.Audience) == 0 {
			add(fielderr.Errorf(p+".audience", "at least one audience is required"))
		}
		if j.File == "" {
			add(fielderr.Errorf(p+".file", "is required"))
		}
		file(p+".file", j.File)
		mode(p+".mode", j.Mode, true)
	}
	// The formats' own fields (formats.go); their file names share seen.
	add(o.normalizeFormats(func(field, name string) error {
		file(field, name)
		return nil
	}))
	if len(seen) == 0 && len(o.JWT) == 0 && !o.wantsFormats() {
		add(errors.New("no files to write (set cert_file, key_file, bundle_file, combined_file, layout, bundle_dir, pkcs12, jwt or jwt_bundle_file)"))
	}
	for i, r := range o.Reloads {
		if err := ValidateReloader(r); err != nil {
			add(&FieldError{Field: fmt.Sprintf("reloads[%d]", i), Err: err})
		}
	}
	return errors.Join(errs...)
}

// ValidateReloader checks a Reloader's own settings as NewManager does
// (signal, exec, systemd and launchd reloaders know theirs).
func ValidateReloader(r Reloader) error {
	if r == nil {
		return errors.New("is nil")
	}
	if v, ok := r.(validator); ok {
		return v.validate()
	}
	return nil
}

// Warnings are legal but probably unintended settings of o, one line each:
// today, a key more widely readable than its certificate.
func (o Output) Warnings() []error {
	o = o.withDefaults()
	var w []error
	if o.KeyFile != "" && o.CertFile != "" && o.KeyMode.Perm()&^o.CertMode.Perm() != 0 {
		w = append(w, fielderr.Errorf("key_mode", "%s is wider than cert_mode %s: the key is readable where the certificate is not",
			octal(o.KeyMode), octal(o.CertMode)))
	}
	return w
}
