// Package packaging holds the reviewed service definitions for identity-agent
// as templates. The rendered reference files next to them
// (systemd/identity-agent.service, launchd/io.identity-agent.plist) are what a
// reviewer reads; internal/service renders the same templates at install time
// and a test keeps the two byte-for-byte identical.
package packaging

import _ "embed"

//go:generate go test ../internal/service -run TestReferenceFiles -update

//go:embed systemd/identity-agent.service.tmpl
var systemdUnit string

//go:embed launchd/io.identity-agent.plist.tmpl
var launchdPlist string

// SystemdUnitTemplate returns the text/template source of the systemd unit.
func SystemdUnitTemplate() string { return systemdUnit }

// LaunchdPlistTemplate returns the text/template source of the launchd plist.
func LaunchdPlistTemplate() string { return launchdPlist }
