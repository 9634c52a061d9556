package fielderr_test

import (
	"errors"
	"fmt"

	"github.com/identity-agent/identity-agent/pkg/fielderr"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// One errors.As serves every package's Validate.
func Example() {
	for _, err := range []error{
		rotation.Output{Name: "web", Dir: "/etc/web", CertFile: "c.pem", KeyFile: "c.pem"}.Validate(),
		tlsproxy.Config{Name: "p", Mode: "sideways"}.Validate(),
	} {
		var fe *fielderr.Error
		if errors.As(err, &fe) {
			fmt.Println(fe.Field)
		}
	}
	// Output:
	// key_file
	// mode
}
