package fielderr

import "fmt"

// Error is a problem with one field. Field is the configuration key it
// concerns, relative to the value validated and spelled as the agent's
// YAML spells it ("key_mode", "jwt[1].file", "allow[2]").
type Error struct {
	Field string
	Err   error
}

// Errorf returns an *Error for field with a message formatted as
// fmt.Errorf does (so %w wraps).
func Errorf(field, format string, args ...any) error {
	return &Error{Field: field, Err: fmt.Errorf(format, args...)}
}

func (e *Error) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// FieldName is the key the error concerns (Field), for callers that match
// on the method rather than on the type.
func (e *Error) FieldName() string { return e.Field }
