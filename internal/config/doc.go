// Package config holds identity-agent's YAML configuration: its types,
// defaults, strict decoding (an unknown key is an error with its line) and
// the file's own rules (its shape, absolute paths, names, references
// between sections). Every problem is a Problem, one line of the form
// "FILE:LINE: field: problem", all of them reported at once, so that an
// operator can jump to each.
//
// The settings a package consumes are checked by that package's Validate;
// agent.NewPlan converts the config, calls them and maps their fielderr.Errors
// back to lines with Config.At. The defaults are the packages' own
// constants. This package does no I/O beyond reading the file.
//
// Reload kinds are one table (reloadKinds in reload.go) and one file each
// (reload_<kind>.go): the settings type with its defaults, the file's
// rules, how to build its rotation.Reloader (Reload.Build, which touches
// nothing) and what the service needs (Reload.ServiceNeeds).
package config
