package tlsproxy_test

import (
	"bufio"
	"crypto/x509"
	"errors"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/mtls"
	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// filePolicy stands in for a policy-file authorizer: String names the
// file, Content is what was read from it, allowed is what it decides.
type filePolicy struct {
	content string
	allowed spiffeid.ID
}

func (p filePolicy) Authorize(id spiffeid.ID, _ [][]*x509.Certificate) error {
	if id != p.allowed {
		return errors.New("policy says no")
	}
	return nil
}
func (p filePolicy) String() string  { return "policy /etc/authz.rego" }
func (p filePolicy) Content() []byte { return []byte(p.content) }

// TestConfigEqualCoversEveryField: changing any one field of a Config
// makes it unequal, so a field added later cannot be forgotten by the
// reload diff.
func TestConfigEqualCoversEveryField(t *testing.T) {
	base := tlsproxy.Config{Name: "p", Mode: tlsproxy.ModeServer, Listen: "127.0.0.1:1", Target: "127.0.0.1:2",
		Allow: []string{clientID.String()}}
	require.True(t, base.Equal(base))
	typ := reflect.TypeFor[tlsproxy.Config]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		changed := base
		changed.Allow = append([]string(nil), base.Allow...)
		v := reflect.ValueOf(&changed).Elem().Field(i)
		switch f.Name {
		case "Allow":
			changed.Allow = append(changed.Allow, otherID.String())
		case "Authorizer":
			changed.Allow = nil
			changed.Authorizer = mtls.Describe("only "+clientID.String(), tlsconfig.AuthorizeID(clientID))
		default:
			switch v.Kind() {
			case reflect.String:
				v.SetString(v.String() + "x")
			case reflect.Bool:
				v.SetBool(!v.Bool())
			case reflect.Int, reflect.Int64:
				v.SetInt(v.Int() + 1)
			default:
				t.Fatalf("field %s of kind %s: teach this test how to change it", f.Name, v.Kind())
			}
		}
		assert.False(t, base.Equal(changed), "a change of %s goes unnoticed by Equal", f.Name)
		assert.False(t, changed.Equal(base), "a change of %s goes unnoticed by Equal (reversed)", f.Name)
	}
}

// TestConfigEqualComparesPolicyContent: the authorizer is compared by
// what it decides (its fingerprint), not by pointer or by how it was given.
func TestConfigEqualComparesPolicyContent(t *testing.T) {
	byAllow := tlsproxy.Config{Name: "p", Mode: tlsproxy.ModeServer, Listen: "127.0.0.1:1", Target: "127.0.0.1:2",
		Allow: []string{clientID.String(), "spiffe://partner.org"}}
	list, err := mtls.ParseAllow(byAllow.Allow)
	require.NoError(t, err)
	byAuthz := byAllow
	byAuthz.Allow, byAuthz.Authorizer = nil, list
	assert.True(t, byAllow.Equal(byAuthz), "the same list as Allow or as Authorizer")
	assert.Equal(t, byAllow.PolicyFingerprint(), byAuthz.PolicyFingerprint())

	v1, v2 := byAuthz, byAuthz
	v1.Authorizer = filePolicy{content: "allow client", allowed: clientID}
	v2.Authorizer = filePolicy{content: "allow other", allowed: otherID}
	assert.False(t, v1.Equal(v2), "an edited policy file is a change though its name is not")
	v2.Authorizer = filePolicy{content: "allow client", allowed: clientID}
	assert.True(t, v1.Equal(v2), "the same file loaded twice is not")

	bad1, bad2 := byAllow, byAllow
	bad1.Allow, bad2.Allow = []string{"nope"}, []string{"nope2"}
	assert.False(t, bad1.Equal(bad2), "two different invalid lists")
	assert.True(t, bad1.Equal(bad1))
}

func TestAllowAndAuthorizerAreExclusive(t *testing.T) {
	e := newEnv(t)
	cfg := tlsproxy.Config{Name: "p", Mode: tlsproxy.ModeServer, Listen: "127.0.0.1:0", Target: "127.0.0.1:2",
		Allow: []string{clientID.String()}, Authorizer: mtls.Describe("anyone", tlsconfig.AuthorizeAny())}
	err := cfg.Validate()
	require.EqualError(t, err, "allow: set either Allow or Authorizer, not both")
	var fe *tlsproxy.FieldError
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, "allow", fe.Field)
	_, err = tlsproxy.New(cfg, e.server, e.server)
	assert.EqualError(t, err, `proxy "p": allow: set either Allow or Authorizer, not both`)

	cfg.Allow = nil
	require.NoError(t, cfg.Validate())
	cfg.Authorizer = nil
	assert.EqualError(t, cfg.Validate(), "allow: at least one allowed SPIFFE ID is required (there is no allow-anyone)")
}

// TestAuthorizerDecidesAndUpdateReRunsIt: a proxy given an Authorizer
// instead of Allow admits whom it says; an Update whose policy has the
// same name but new content re-runs it on established peers.
func TestAuthorizerDecidesAndUpdateReRunsIt(t *testing.T) {
	e := newEnv(t)
	srv, cli := pair(t, e, echoBackend(t), func(s, _ *tlsproxy.Config) {
		s.Allow = nil
		s.Authorizer = filePolicy{content: "allow client", allowed: clientID}
	})
	c, err := net.Dial("tcp", cli.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	r := bufio.NewReader(c)
	roundTrip(t, c, r, "the policy admits the client")
	assert.Equal(t, "policy /etc/authz.rego", srv.Stats().Authorizer)
	assert.Equal(t, "allow "+serverID.String(), cli.Stats().Authorizer)
	listening := srv.logs.FilterMessage("proxy listening").All()
	require.Len(t, listening, 1)
	assert.Equal(t, "policy /etc/authz.rego", fieldString(listening[0], "authorizer"))

	cfg := tlsproxy.Config{Name: "srv", Mode: tlsproxy.ModeServer, Listen: srv.Addr().String(), Target: srv.Stats().Target,
		Authorizer: filePolicy{content: "allow other", allowed: otherID}}
	require.NoError(t, srv.Update(cfg))
	requireClosed(t, c, r, 15*time.Second)
	assert.Equal(t, uint64(1), srv.Stats().ConnectionsRevoked)
	updated := srv.logs.FilterMessage("proxy updated").All()
	require.Len(t, updated, 1)
	assert.Equal(t, "policy /etc/authz.rego", fieldString(updated[0], "authorizer"))

	// New connections are judged by the new content too.
	err = oneRequest(cli.Addr().String(), "refused now")
	require.Error(t, err)
	require.Eventually(t, func() bool { return len(srv.rejections(tlsproxy.CauseUnauthorizedID)) == 1 }, 15*time.Second, 10*time.Millisecond)
}
