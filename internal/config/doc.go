// Package config holds identity-agent's YAML configuration: its types,
// defaults, strict decoding (an unknown key is an error with its line) and
// validation. Every error it returns is one line of the form
// "FILE:LINE: field: problem", so that an operator can jump to it.
//
// It does no I/O beyond reading the file: names of users and groups, pid
// files and sockets are checked by whoever uses them.
package config
