// Package layering holds no code: its test checks the layering rule of
// docs/ARCHITECTURE.md, that pkg/ imports internal/ only for unexported
// implementation, so no internal/ type reaches a pkg/ exported API.
package layering
