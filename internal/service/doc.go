// Package service installs and controls identity-agent as a system service:
// systemd on Linux, launchd on macOS, through kardianos/service.
//
// What it installs is rendered from the reviewed templates in packaging/
// (RenderSystemdUnit, RenderLaunchdPlist); the reference files next to those
// templates are the same rendering with the default values, and a test keeps
// them identical. LayoutFromConfig derives from an agent config what the unit
// must leave writable and which extra capabilities it needs; Prepare
// (EnsureDirs) creates the output and socket directories with their owner
// and mode when the agent starts.
//
// The control functions (Start, Stop, Restart, Status) shell out to
// systemctl/launchctl through kardianos/service, which takes no context;
// those commands return promptly or are bounded by the service manager's own
// timeouts (TimeoutStartSec=/TimeoutStopSec= in the unit).
package service
