package tlsprobe

// Equal is true for a Prober of the same address, server name and
// timeout (rotation.Output.Equal compares verify checkers with it).
func (p *Prober) Equal(other any) bool {
	o, ok := other.(*Prober)
	return ok && p != nil && o != nil && *p == *o
}
