package rotation_test

import (
	"errors"
	"fmt"

	"github.com/identity-agent/identity-agent/pkg/rotation"
)

// Validate reports every problem of an Output at once, each naming its
// field, without touching the file system.
func ExampleOutput_Validate() {
	o := rotation.Output{Name: "redis", Dir: "/etc/redis/tls", Formats: []rotation.Format{&rotation.PEM{CertFile: "tls.pem", KeyFile: "tls.pem", KeyMode: 0o644}}}
	err := o.Validate()
	var fe *rotation.FieldError
	if errors.As(err, &fe) {
		fmt.Println("first field:", fe.Field)
	}
	fmt.Println(err)
	// Output:
	// first field: key_file
	// key_file: "tls.pem" is also used by cert_file
	// key_mode: 0644 lets every user read a secret; use 0600 or 0640 (or set unsafe_world_readable_key: true)
}
