package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

// reloadKinds is the one table of reload kinds: an entry's YAML key and
// the type of its settings, in the order messages list them. Each kind is
// one file, reload_<key>.go, holding its settings type and their defaults,
// the file's rules, how to build the reloader and what the service needs;
// adding a kind is that file and one line here.
func reloadKinds() []reloadKind {
	return []reloadKind{
		kind[SignalReload]("signal"),
		kind[ExecReload]("exec"),
		kind[SystemdReload]("systemd"),
		kind[LaunchdReload]("launchd"),
		kind[RedisReload]("redis"),
		kind[TraefikReload]("traefik"),
	}
}

// ReloadSpec is the settings of one reload kind (*SignalReload, ...). Its
// unexported methods keep the kinds in this package, each in its file.
type ReloadSpec interface {
	// Build makes the reloader and checks what only the consuming package
	// knows; an error may name a field below the kind (FieldName, e.g.
	// "name" of signal). It touches nothing and connects nowhere: with a
	// nil env.Source (config validate, status) the reloader is only checked.
	Build(env ReloadEnv) (rotation.Reloader, error)
	// ServiceNeeds is what the service definition must allow the agent for
	// this reload.
	ServiceNeeds() ServiceNeeds

	// applyDefaults fills the fields left empty.
	applyDefaults()
	// check reports the file's own rules (required and absolute fields,
	// what the output must write).
	check(c reloadCheck)
}

// ReloadEnv is what building a reloader may use beyond its settings.
type ReloadEnv struct {
	// Output is the output the reload follows (its file names, selector).
	Output Output
	// Owner is the output's owner, resolved; atomicdir.KeepOwner() for none.
	Owner atomicdir.Owner
	// Source is the agent's Workload API source; nil when the reloader is
	// only checked.
	Source *svid.Source
	// Logger is the agent's logger (each kind names its own); nil: none.
	Logger *zap.Logger
	// Registerer takes the reloaders' metrics; nil: none.
	Registerer prometheus.Registerer
}

func (e ReloadEnv) logger(name string) *zap.Logger {
	if e.Logger == nil {
		return zap.NewNop()
	}
	return e.Logger.Named(name)
}

// ServiceNeeds is what a reload needs the service definition to allow
// (internal/service turns it into the unit's settings).
type ServiceNeeds struct {
	// WritableDirs the reload writes into, beyond the output's dir.
	WritableDirs []string
	// Capabilities beyond CAP_CHOWN, e.g. CAP_KILL to signal a service that
	// runs as another user.
	Capabilities []string
}

// Reload is one entry of an output's reload list: the action after its
// files changed. Its key names the kind (one of reloadKinds) and its value
// holds that kind's settings. A valid entry names exactly one kind.
type Reload struct {
	// specs are the kinds the entry names, in the table's order.
	specs []ReloadSpec
	kinds []string
}

// ReloadKinds are the YAML keys of the reload kinds, in the order messages
// list them.
func ReloadKinds() []string { return kindKeys(reloadKinds()) }

func kindKeys(kinds []reloadKind) []string {
	keys := make([]string, len(kinds))
	for i, k := range kinds {
		keys[i] = k.key
	}
	return keys
}

// Kind names the kind the entry sets ("signal"), "a+b" when it sets
// several, "" when none.
func (r Reload) Kind() string { return strings.Join(r.kinds, "+") }

// Spec is the settings of the entry's kind (*SignalReload, ...); nil
// unless it names exactly one.
func (r Reload) Spec() ReloadSpec {
	if len(r.specs) != 1 {
		return nil
	}
	return r.specs[0]
}

// Build makes the entry's reloader (see ReloadSpec.Build) and validates it
// as pkg/rotation will. Errors of the settings name their field below the
// entry ("signal.name", "traefik"); the reloader's own validation concerns
// the entry. An entry that names no kind or several was refused by the
// file's rules: nil, nil.
func (r Reload) Build(env ReloadEnv) (rotation.Reloader, error) {
	spec := r.Spec()
	if spec == nil {
		return nil, nil
	}
	rl, err := spec.Build(env)
	if err != nil {
		var fe fieldNamer
		if errors.As(err, &fe) {
			if u := errors.Unwrap(fe); u != nil {
				return nil, &rotation.FieldError{Field: joinField(r.kinds[0], fe.FieldName()), Err: u}
			}
		}
		return nil, &rotation.FieldError{Field: r.kinds[0], Err: err}
	}
	if rl == nil {
		return nil, nil // the file's rules refused the settings
	}
	return rl, rotation.ValidateReloader(rl)
}

func (r Reload) applyDefaults() {
	for _, s := range r.specs {
		s.applyDefaults()
	}
}

// ServiceNeeds of the entry's kind; none when it names no single kind.
func (r Reload) ServiceNeeds() ServiceNeeds {
	if spec := r.Spec(); spec != nil {
		return spec.ServiceNeeds()
	}
	return ServiceNeeds{}
}

// reloadKind is one row of reloadKinds.
type reloadKind struct {
	key string
	typ reflect.Type // the settings struct
}

// kind registers the settings type T under key.
func kind[T any, P interface {
	*T
	ReloadSpec
}](key string) reloadKind {
	return reloadKind{key: key, typ: reflect.TypeFor[T]()}
}

// UnmarshalYAML decodes an entry through a struct with one pointer field
// per registered kind, tagged with its key. It is the yaml.v2-style
// unmarshaler on purpose: its unmarshal runs in the file's own strict
// decoder, so an unknown key inside a kind is an error with its line, as
// in every other section. The generated struct's name in yaml's messages
// is replaced by config.Reload, the name they had when Reload was a plain
// struct.
func (r *Reload) UnmarshalYAML(unmarshal func(any) error) error {
	return r.decode(reloadKinds(), unmarshal)
}

func (r *Reload) decode(kinds []reloadKind, unmarshal func(any) error) error {
	fields := make([]reflect.StructField, len(kinds))
	for i, k := range kinds {
		fields[i] = reflect.StructField{
			Name: fmt.Sprintf("Kind%d", i),
			Type: reflect.PointerTo(k.typ),
			Tag:  reflect.StructTag(`yaml:"` + k.key + `"`),
		}
	}
	st := reflect.StructOf(fields)
	v := reflect.New(st)
	err := unmarshal(v.Interface())
	var te *yaml.TypeError
	if errors.As(err, &te) {
		for i, m := range te.Errors {
			te.Errors[i] = strings.ReplaceAll(m, st.String(), reflect.TypeFor[Reload]().String())
		}
	} else if err != nil {
		return err
	}
	*r = Reload{}
	for i, k := range kinds {
		if f := v.Elem().Field(i); !f.IsNil() {
			r.specs = append(r.specs, f.Interface().(ReloadSpec))
			r.kinds = append(r.kinds, k.key)
		}
	}
	return err
}

// useOneOf is the hint for an entry that names no kind.
func useOneOf(kinds []reloadKind) string {
	return "use one of " + strings.Join(kindKeys(kinds), ", ")
}

// reloadCheck is where a kind's check reports: its field paths are below
// the kind's key, and it sees the output the reload follows.
type reloadCheck struct {
	v    *validator
	base []any // the kind's key path: outputs, i, reload, j, key
	out  Output
}

// errorf reports a problem at the field below the kind (none: the kind).
func (c reloadCheck) errorf(field []any, format string, args ...any) {
	c.v.errorf(append(append([]any{}, c.base...), field...), format, args...)
}

// abs refuses a relative path (see checkAbs).
func (c reloadCheck) abs(field string, p string) {
	checkAbs(c.v, append(append([]any{}, c.base...), field), p)
}

func checkReload(v *validator, p []any, rl Reload, o Output) {
	switch len(rl.specs) {
	case 0:
		v.errorf(p, "names no action: %s", useOneOf(reloadKinds()))
		return
	case 1:
	default:
		v.errorf(p, "sets %s: one action per list entry", strings.Join(rl.kinds, " and "))
		return
	}
	rl.specs[0].check(reloadCheck{v: v, base: append(append([]any{}, p...), rl.kinds[0]), out: o})
}
