package svid

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Selector picks one X.509-SVID out of the several a workload may get.
//
// SpiffeID matches exactly (the full "spiffe://..." string). Hint matches
// the operator-set hint SPIRE sends with each SVID. When both are set, the
// SVID must match both. When both are empty, the first SVID is picked, which
// is the Workload API's default identity.
type Selector struct {
	SpiffeID string
	Hint     string
}

// Pick returns the SVID the selector names. The error names what was wanted
// and every SVID that was offered, so a misconfigured hint or ID is fixed
// from the log line alone.
func (s Selector) Pick(svids []*x509svid.SVID) (*x509svid.SVID, error) {
	if len(svids) == 0 {
		return nil, fmt.Errorf("select X.509-SVID %s: the Workload API offered no SVIDs", s)
	}
	if s.SpiffeID == "" && s.Hint == "" {
		return svids[0], nil
	}
	for _, sv := range svids {
		if sv == nil {
			continue
		}
		if s.SpiffeID != "" && sv.ID.String() != s.SpiffeID {
			continue
		}
		if s.Hint != "" && sv.Hint != s.Hint {
			continue
		}
		return sv, nil
	}
	return nil, fmt.Errorf("select X.509-SVID %s: no match among offered [%s]", s, describeSVIDs(svids))
}

// String describes the selector for logs and errors.
func (s Selector) String() string {
	switch {
	case s.SpiffeID == "" && s.Hint == "":
		return "default (first SVID)"
	case s.Hint == "":
		return "spiffe_id=" + s.SpiffeID
	case s.SpiffeID == "":
		return "hint=" + strconv.Quote(s.Hint)
	default:
		return "spiffe_id=" + s.SpiffeID + " hint=" + strconv.Quote(s.Hint)
	}
}

func describeSVIDs(svids []*x509svid.SVID) string {
	parts := make([]string, 0, len(svids))
	for _, sv := range svids {
		if sv == nil {
			continue
		}
		d := sv.ID.String()
		if sv.Hint != "" {
			d += " (hint " + strconv.Quote(sv.Hint) + ")"
		}
		parts = append(parts, d)
	}
	return strings.Join(parts, ", ")
}

// ErrNotReady is returned (wrapped) by Source getters before the first
// X.509 context arrived from the Workload API.
var ErrNotReady = errors.New("no X.509 context received from the Workload API yet")
