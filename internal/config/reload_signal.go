package config

import "github.com/identity-agent/identity-agent/pkg/rotation"

// SignalReload sends a signal to a process named by pid or pid file.
type SignalReload struct {
	PidFile string `yaml:"pid_file"`
	Pid     int    `yaml:"pid"`
	Name    string `yaml:"name"` // e.g. SIGHUP (default)
}

func (s *SignalReload) applyDefaults() {
	if s.Name == "" {
		s.Name = rotation.DefaultReloadSignal
	}
}

func (s *SignalReload) check(c reloadCheck) {
	if (s.PidFile == "") == (s.Pid == 0) {
		c.errorf(nil, "set exactly one of pid_file and pid")
	}
	if s.Pid < 0 {
		c.errorf(path("pid"), "must be positive")
	}
	c.abs("pid_file", s.PidFile)
	if _, err := rotation.ParseSignal(s.Name); err != nil {
		c.errorf(path("name"), "%v", err)
	}
}

// Build is rotation.NewSignalReloader.
func (s *SignalReload) Build(ReloadEnv) (rotation.Reloader, error) {
	sig, err := rotation.ParseSignal(s.Name)
	if err != nil {
		return nil, &rotation.FieldError{Field: "name", Err: err}
	}
	return rotation.NewSignalReloader(s.PidFile, s.Pid, sig), nil
}

// ServiceNeeds: CAP_KILL, the target usually runs as another user.
func (s *SignalReload) ServiceNeeds() ServiceNeeds {
	return ServiceNeeds{Capabilities: []string{"CAP_KILL"}}
}
