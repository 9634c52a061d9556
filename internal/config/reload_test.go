package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/identity-agent/identity-agent/pkg/rotation"
)

// demoReload is a throwaway reload kind, registered only in this test's
// table: what a new kind's file holds.
type demoReload struct {
	Target string `yaml:"target"`
}

func (d *demoReload) applyDefaults() {
	if d.Target == "" {
		d.Target = "default-target"
	}
}

func (d *demoReload) check(c reloadCheck) {
	if d.Target == "bad" {
		c.errorf(path("target"), "is bad")
	}
}

func (d *demoReload) Build(ReloadEnv) (rotation.Reloader, error) {
	if d.Target == "unbuildable" {
		return nil, &rotation.FieldError{Field: "target", Err: errors.New("cannot be built")}
	}
	return rotation.NewExecReloader([]string{"echo", d.Target}, time.Second), nil
}

func (d *demoReload) ServiceNeeds() ServiceNeeds {
	return ServiceNeeds{Capabilities: []string{"CAP_DEMO"}, WritableDirs: []string{"/var/demo"}}
}

// demoEntry decodes one reload entry with a given table, in a strict
// decoder like the file's.
type demoEntry struct {
	kinds []reloadKind
	r     Reload
}

func (d *demoEntry) UnmarshalYAML(unmarshal func(any) error) error {
	return d.r.decode(d.kinds, unmarshal)
}

func decodeEntry(t *testing.T, kinds []reloadKind, doc string) (Reload, error) {
	t.Helper()
	d := &demoEntry{kinds: kinds}
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	err := dec.Decode(d)
	return d.r, err
}

// TestReloadKindIsOneTableEntry: a kind registered in the table is
// decoded (strictly, messages naming its type), listed in the "use one
// of" hint, defaulted, checked, built and asked for its service needs,
// with nothing but its own type and its table line; the real table is the
// only source of the hint.
func TestReloadKindIsOneTableEntry(t *testing.T) {
	kinds := append(reloadKinds(), kind[demoReload]("demo"))
	assert.Equal(t, "use one of signal, exec, systemd, launchd, redis, traefik, demo", useOneOf(kinds))
	assert.Equal(t, "use one of "+strings.Join(ReloadKinds(), ", "), useOneOf(reloadKinds()))

	r, err := decodeEntry(t, kinds, "demo: {target: x}\n")
	require.NoError(t, err)
	require.Equal(t, "demo", r.Kind())
	require.Equal(t, &demoReload{Target: "x"}, r.Spec())

	_, err = decodeEntry(t, kinds, "demo:\n  target: x\n  tagret: y\n")
	require.EqualError(t, err, "yaml: unmarshal errors:\n  line 3: field tagret not found in type config.demoReload")
	_, err = decodeEntry(t, kinds, "demo: {}\nbogus: 1\n")
	require.EqualError(t, err, "yaml: unmarshal errors:\n  line 2: field bogus not found in type config.Reload")
	_, err = decodeEntry(t, kinds, "[demo]\n")
	require.EqualError(t, err, "yaml: unmarshal errors:\n  line 1: cannot unmarshal !!seq into config.Reload")
	r, err = decodeEntry(t, kinds, "{exec: {command: [true]}, demo: {}}\n")
	require.NoError(t, err)
	require.Equal(t, "exec+demo", r.Kind(), "in the table's order")
	require.Nil(t, r.Spec())

	r, err = decodeEntry(t, kinds, "demo: {}\n")
	require.NoError(t, err)
	r.applyDefaults()
	require.Equal(t, &demoReload{Target: "default-target"}, r.Spec())
	rl, err := r.Build(ReloadEnv{})
	require.NoError(t, err)
	require.Equal(t, "exec", rl.Kind())
	require.Equal(t, ServiceNeeds{Capabilities: []string{"CAP_DEMO"}, WritableDirs: []string{"/var/demo"}}, r.ServiceNeeds())

	r, err = decodeEntry(t, kinds, "demo: {target: unbuildable}\n")
	require.NoError(t, err)
	_, err = r.Build(ReloadEnv{})
	var fe *rotation.FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "demo.target", fe.Field, "a build error names its field below the kind")
	require.EqualError(t, fe.Err, "cannot be built")

	r, err = decodeEntry(t, kinds, "demo: {target: bad}\n")
	require.NoError(t, err)
	v := &validator{cfg: &Config{Path: "a.yaml"}}
	checkReload(v, path("outputs", 0, "reload", 0), r, Output{})
	require.EqualError(t, v.errs, "a.yaml:1: outputs[0].reload[0].demo.target: is bad")

	v = &validator{cfg: &Config{Path: "a.yaml"}}
	checkReload(v, path("outputs", 0, "reload", 0), Reload{}, Output{})
	require.EqualError(t, v.errs, "a.yaml:1: outputs[0].reload[0]: names no action: "+useOneOf(reloadKinds()))
}

// TestEveryRegisteredKindDecodesToItsType: each key of the real table
// decodes to its own settings type and answers for itself.
func TestEveryRegisteredKindDecodesToItsType(t *testing.T) {
	for _, k := range reloadKinds() {
		r, err := decodeEntry(t, reloadKinds(), k.key+": {}\n")
		require.NoError(t, err, k.key)
		require.Equal(t, k.key, r.Kind())
		require.Equal(t, reflect.PointerTo(k.typ), reflect.TypeOf(r.Spec()), k.key)
		require.Equal(t, r.Spec().ServiceNeeds(), r.ServiceNeeds(), k.key)
	}
}
