package config

import "github.com/identity-agent/identity-agent/pkg/rotation"

// LaunchdReload kickstarts a launchd job.
type LaunchdReload struct {
	Label   string `yaml:"label"`
	Restart *bool  `yaml:"restart"` // kill and restart the job (default true)
}

func (l *LaunchdReload) applyDefaults() {
	if l.Restart == nil {
		t := true
		l.Restart = &t
	}
}

// check: the label is checked by the reloader (rotation.ValidateReloader).
func (l *LaunchdReload) check(reloadCheck) {}

// Build is rotation.NewLaunchdReloader.
func (l *LaunchdReload) Build(ReloadEnv) (rotation.Reloader, error) {
	return rotation.NewLaunchdReloader(l.Label, l.Restart == nil || *l.Restart), nil
}

// ServiceNeeds: nothing the rendered service adds for it today.
func (l *LaunchdReload) ServiceNeeds() ServiceNeeds { return ServiceNeeds{} }
