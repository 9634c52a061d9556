package redistransition

import (
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/identity-agent/identity-agent/internal/redistest"
)

// The shared Redis test environment (internal/redistest) under the names
// these tests use.
var serverID = redistest.ServerID

const testPassword = redistest.Password

// adminConfig reaches r's unix socket with e's password file.
func adminConfig(r *redistest.Proc, e *redistest.Env) AdminConfig {
	return AdminConfig{Addr: "unix://" + r.Sock, PasswordFile: e.PasswordFile}
}

func serial(s *x509svid.SVID) string { return s.Certificates[0].SerialNumber.Text(16) }
