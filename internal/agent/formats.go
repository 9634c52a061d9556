package agent

import (
	"errors"
	"time"

	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/tlsprobe"
)

// applyFormats sets the rotation output's formats (config's format table:
// internal/config/formats.go) and its verify check from the config.
func applyFormats(ro *rotation.Output, o config.Output) error {
	formats, err := o.RotationFormats()
	errs := []error{err}
	ro.Formats = formats
	if v := o.Verify; v != nil && v.Address != "" {
		var opts []tlsprobe.Option
		if v.ServerName != "" {
			opts = append(opts, tlsprobe.WithServerName(v.ServerName))
		}
		p, err := tlsprobe.New(v.Address, opts...)
		if err != nil {
			errs = append(errs, &fieldError{field: "verify.address", err: err})
		} else {
			ro.Verify = p
		}
		ro.VerifyTimeout = time.Duration(v.Timeout)
	}
	return errors.Join(errs...)
}
