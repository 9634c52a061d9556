package tlsproxy

import "slices"

// Equal reports whether c and o are the same settings, field by field
// (Allow in order). It compares what was configured, not what New would
// make of it: two spellings of one address are different settings.
func (c Config) Equal(o Config) bool {
	return c.Name == o.Name && c.Mode == o.Mode && c.Listen == o.Listen && c.Target == o.Target &&
		slices.Equal(c.Allow, o.Allow) && c.HTTP == o.HTTP && c.RewriteHost == o.RewriteHost &&
		c.MaxConns == o.MaxConns && c.MaxHandshakes == o.MaxHandshakes && c.MaxHandshakesPerSource == o.MaxHandshakesPerSource &&
		c.HandshakeTimeout == o.HandshakeTimeout && c.IdleTimeout == o.IdleTimeout && c.ConnectTimeout == o.ConnectTimeout &&
		c.DrainTimeout == o.DrainTimeout && c.MaxConnLifetime == o.MaxConnLifetime &&
		c.UnsafeAllowNonLoopbackPlaintext == o.UnsafeAllowNonLoopbackPlaintext
}
