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
