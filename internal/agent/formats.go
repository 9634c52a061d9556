package agent

import (
	"errors"
	"time"

	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/tlsprobe"
)

// applyFormats copies an output's format and verify settings from the
// config into the rotation output.
func applyFormats(ro *rotation.Output, o config.Output) error {
	f := o.Formats
	var errs []error
	order, err := svid.ParseCombinedOrder(f.CombinedOrder)
	if err != nil {
		errs = append(errs, &fieldError{field: "combined_order", err: err})
	}
	ro.CombinedFile, ro.CombinedOrder = f.CombinedFile, order
	ro.Layout = f.Layout
	ro.BundleDir = f.BundleDir
	if k := f.PKCS12; k != nil {
		ro.PKCS12 = rotation.PKCS12{KeystoreFile: k.KeystoreFile, TruststoreFile: k.TruststoreFile, PasswordFile: k.PasswordFile}
	}
	if v := f.Verify; v != nil && v.Address != "" {
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
