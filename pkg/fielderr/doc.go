// Package fielderr is the one error type the pkg/ packages' Validate
// methods (rotation.Output.Validate, tlsproxy.Config.Validate, ...) use
// for a problem with one field, so a caller that holds the configuration
// file can point at the line with a single errors.As:
//
//	var fe *fielderr.Error
//	if errors.As(err, &fe) {
//		fmt.Println("field:", fe.Field)
//	}
//
// Validate joins several of them (errors.Join) when a value has several
// problems; errors.As finds the first.
package fielderr
