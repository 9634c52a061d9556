// Package secretfile reads a password from a file: the one rule every
// password_file in the agent follows (the Redis client, the Redis admin
// connection and transition, the PKCS#12 keystores).
//
// The password is the file's content without its trailing line breaks,
// any number of "\n" or "\r\n": what `redis-cli -a "$(cat FILE)"`,
// `REDISCLI_AUTH="$(cat FILE)"` or `uvicorn --ssl-keyfile-password
// "$(cat FILE)"` pass, so a file written by `echo`, an editor or a
// Windows editor is the password its consumer expects. Every other byte,
// leading and trailing spaces included, is part of the password. The
// file is read on every use, so a rotated password needs no restart.
package secretfile

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// ErrEmpty is returned for a file that holds no password.
var ErrEmpty = errors.New("empty")

// Read returns the password in path (see the package comment for the
// rule). Errors name the file, never its content.
func Read(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" {
		return "", fmt.Errorf("%s: %w", path, ErrEmpty)
	}
	return pw, nil
}
