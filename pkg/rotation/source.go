package rotation

import (
	"context"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/identity-agent/identity-agent/pkg/svid"
)

// Source is what a Manager needs from the Workload API. *svid.Source
// implements it; tests can pass their own, as go-spiffe's consumers take
// an x509svid.Source rather than a client.
type Source interface {
	// X509Context returns the latest X.509 context, or nil before the
	// first one arrived. The Manager does not modify it.
	X509Context() *workloadapi.X509Context
	// JWTBundles returns the latest JWT bundle set, or nil before the
	// first one arrived.
	JWTBundles() *jwtbundle.Set
	// FetchJWTSVID mints a JWT-SVID for the audience (the first element is
	// the primary audience), for the identity sel picks.
	FetchJWTSVID(ctx context.Context, sel svid.Selector, audience []string) (*jwtsvid.SVID, error)
	// Subscribe returns a channel that receives a value after every
	// update (buffer of one, sends never block, never closed) and a
	// function that unregisters it.
	Subscribe() (updates <-chan struct{}, cancel func())
	// Status reports the connection state.
	Status() svid.ConnStatus
}

var _ Source = (*svid.Source)(nil)
