package config

import "github.com/identity-agent/identity-agent/pkg/rotation"

// SystemdReload reloads or restarts a unit with systemctl.
type SystemdReload struct {
	Unit   string `yaml:"unit"`
	Action string `yaml:"action"` // reload (default) | restart | try-restart
}

func (s *SystemdReload) applyDefaults() {
	if s.Action == "" {
		s.Action = rotation.DefaultSystemdAction
	}
}

// check: unit and action are checked by the reloader
// (rotation.ValidateReloader).
func (s *SystemdReload) check(reloadCheck) {}

// Build is rotation.NewSystemdReloader.
func (s *SystemdReload) Build(ReloadEnv) (rotation.Reloader, error) {
	return rotation.NewSystemdReloader(s.Unit, s.Action), nil
}

// ServiceNeeds: nothing the rendered unit adds for it today.
func (s *SystemdReload) ServiceNeeds() ServiceNeeds { return ServiceNeeds{} }
