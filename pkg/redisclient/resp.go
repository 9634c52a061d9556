package redisclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/identity-agent/identity-agent/internal/secretfile"
)

// ServerError is an error reply from Redis ("-ERR ...", "-WRONGPASS ...")
// received while the dialer set up a connection. It is never a reason to
// fall back from TLS to plaintext: the plaintext port has the same users.
type ServerError struct{ Msg string }

func (e *ServerError) Error() string { return "redis: " + e.Msg }

// noPasswordConfigured matches Redis's reply to AUTH when the default user
// has no password (phase D clears requirepass). Clients that still hold a
// password keep working then, which is what makes rollback safe.
func noPasswordConfigured(err error) bool {
	var se *ServerError
	return errors.As(err, &se) && strings.Contains(se.Msg, "without any password configured")
}

// authUser names the default user explicitly: "AUTH default <pw>" succeeds
// when the default user has no password (phase D), whereas the legacy
// one-argument "AUTH <pw>" is refused then. So a client that still holds
// a password keeps working across D and its rollback.
func authUser(u string) string {
	if u == "" {
		return "default"
	}
	return u
}

// roundTrip sends one command on a raw connection and reads a one-line
// reply. The dialer uses it before go-redis owns the connection, so it must
// not read past the reply: it reads byte by byte (setup only, a few bytes).
func roundTrip(ctx context.Context, conn net.Conn, timeout time.Duration, args ...string) (string, error) {
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return "", err
	}
	defer func() { _ = conn.SetDeadline(time.Time{}) }()

	var b strings.Builder
	b.WriteString("*" + strconv.Itoa(len(args)) + "\r\n")
	for _, a := range args {
		b.WriteString("$" + strconv.Itoa(len(a)) + "\r\n" + a + "\r\n")
	}
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return "", err
	}
	line := make([]byte, 0, 64)
	one := make([]byte, 1)
	for len(line) < 4096 {
		if _, err := io.ReadFull(conn, one); err != nil {
			return "", err
		}
		if one[0] == '\n' {
			s := strings.TrimSuffix(string(line), "\r")
			if s == "" {
				return "", fmt.Errorf("empty reply")
			}
			switch s[0] {
			case '+':
				return s[1:], nil
			case '-':
				return "", &ServerError{Msg: s[1:]}
			default:
				return "", fmt.Errorf("unexpected reply %q", s)
			}
		}
		line = append(line, one[0])
	}
	return "", fmt.Errorf("reply longer than 4096 bytes")
}

// readPasswordFile reads a password file on every use so a rotated password
// needs no restart; trailing line breaks are not part of the password
// (internal/secretfile holds the rule).
func readPasswordFile(path string) (string, error) {
	pw, err := secretfile.Read(path)
	if err != nil {
		return "", fmt.Errorf("password_file: %w", err)
	}
	return pw, nil
}
