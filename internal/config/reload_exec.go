package config

import "github.com/identity-agent/identity-agent/pkg/rotation"

// ExecReload runs a command, never through a shell unless argv names one.
type ExecReload struct {
	Command []string `yaml:"command"`
	Timeout Duration `yaml:"timeout"` // default 30s
}

func (e *ExecReload) applyDefaults() { e.Timeout = Duration(e.Timeout.D(rotation.DefaultExecTimeout)) }

// check: the command is checked by the reloader (rotation.ValidateReloader).
func (e *ExecReload) check(reloadCheck) {}

// Build is rotation.NewExecReloader.
func (e *ExecReload) Build(ReloadEnv) (rotation.Reloader, error) {
	return rotation.NewExecReloader(e.Command, e.Timeout.D(rotation.DefaultExecTimeout)), nil
}

// ServiceNeeds: none beyond running the command.
func (e *ExecReload) ServiceNeeds() ServiceNeeds { return ServiceNeeds{} }
