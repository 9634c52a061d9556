package tlsproxy

// WithFDLimit replaces the RLIMIT_NOFILE lookup.
var WithFDLimit = withFDLimit

// FitLimits exposes fitLimits: (maxConns, maxHandshakes, perSource) in and out.
func FitLimits(maxConns, maxHandshakes, perSource int, nofile uint64, perAuthed int) (int, int, int, bool) {
	l, lowered := fitLimits(limits{maxConns: maxConns, maxHandshakes: maxHandshakes, perSource: perSource}, nofile, perAuthed)
	return l.maxConns, l.maxHandshakes, l.perSource, lowered
}
