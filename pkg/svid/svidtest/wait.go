package svidtest

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// waitPoll is how often WaitForCurrentSVID asks the source. A source
// updates from a stream in its own goroutine and offers no common way to
// be told (go-spiffe's X509Source has Updated, svid.Source has Subscribe,
// a selected view has neither), so asking is the one way that fits all.
const waitPoll = 5 * time.Millisecond

// RotateSVIDsAndWait issues new SVIDs as RotateSVIDs does, then waits until
// src serves one of them, and returns it: the step between "rotate" and
// "check what the code under test did with the new SVID" without a polling
// loop in every test. src is anything that serves X.509-SVIDs from this
// server: go-spiffe's workloadapi.X509Source, a svid.Source, or one of its
// X509SVIDSource views. The error, when ctx ends first, names the SVID src
// still serves.
func (s *Server) RotateSVIDsAndWait(ctx context.Context, src x509svid.Source) (*x509svid.SVID, error) {
	if err := s.RotateSVIDs(); err != nil {
		return nil, err
	}
	return s.WaitForCurrentSVID(ctx, src)
}

// WaitForCurrentSVID waits until src serves one of the X.509-SVIDs this
// server serves now (the same leaf certificate, not only the same ID), and
// returns it. Use it after RotateCA's activation, ActivateCA, AddIdentity
// or a Start that renewed stale SVIDs; RotateSVIDsAndWait does both steps
// for a plain rotation. If the server rotates again meanwhile (at half of
// the TTL), the newer SVIDs count.
func (s *Server) WaitForCurrentSVID(ctx context.Context, src x509svid.Source) (*x509svid.SVID, error) {
	t := time.NewTicker(waitPoll)
	defer t.Stop()
	for {
		got, err := src.GetX509SVID()
		if err == nil && s.isCurrent(got) {
			return got, nil
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return nil, fmt.Errorf("svidtest: waiting for the source to serve a current X.509-SVID: last answer: %v: %w", err, context.Cause(ctx))
			}
			return nil, fmt.Errorf("svidtest: waiting for the source to serve a current X.509-SVID: it still serves %s: %w",
				describe(got), context.Cause(ctx))
		case <-t.C:
		}
	}
}

// isCurrent reports whether sv's leaf is one this server serves now.
func (s *Server) isCurrent(sv *x509svid.SVID) bool {
	if sv == nil || len(sv.Certificates) == 0 {
		return false
	}
	leaf := sv.Certificates[0].Raw
	for _, cur := range s.CurrentSVIDs() {
		if bytes.Equal(cur.Certificates[0].Raw, leaf) {
			return true
		}
	}
	return false
}

func describe(sv *x509svid.SVID) string {
	if sv == nil || len(sv.Certificates) == 0 {
		return "no certificate"
	}
	return fmt.Sprintf("%s serial %s", sv.ID, sv.Certificates[0].SerialNumber)
}
