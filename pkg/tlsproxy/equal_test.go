package tlsproxy_test

import (
	"reflect"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// TestConfigEqualSeesEveryField: changing any one field of a Config makes
// it unequal, so a field added later without a line in Equal fails here.
func TestConfigEqualSeesEveryField(t *testing.T) {
	base := tlsproxy.Config{Allow: []string{"spiffe://example.org/a"}}
	require.True(t, base.Equal(tlsproxy.Config{Allow: []string{"spiffe://example.org/a"}}))
	typ := reflect.TypeOf(base)
	for i := range typ.NumField() {
		c := base
		c.Allow = []string{"spiffe://example.org/a"}
		f := reflect.ValueOf(&c).Elem().Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString("x")
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Int, reflect.Int64:
			f.SetInt(7)
		case reflect.Slice:
			f.Set(reflect.ValueOf([]string{"spiffe://example.org/b"}))
		default:
			t.Fatalf("field %s: kind %s not covered by this test", typ.Field(i).Name, f.Kind())
		}
		require.False(t, base.Equal(c), "a change of %s is not seen", typ.Field(i).Name)
	}
}
