package rotation

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/zap"
)

// DefaultVerifyTimeout is how long a service may take, after its reload,
// to serve the certificate just written before the reload counts as not
// taken: a restart through systemd or an exec hook returns before the
// service listens again.
const DefaultVerifyTimeout = 10 * time.Second

// verifyPoll bounds the pause between probes while waiting for the service.
const (
	verifyPollMin = 100 * time.Millisecond
	verifyPollMax = time.Second
)

// ServedChecker tells which certificate a service serves on its TLS
// endpoint. *tlsprobe.Prober implements it; the rotation package itself
// opens no sockets to peers.
type ServedChecker interface {
	// Address names the endpoint in logs and State.
	Address() string
	// Served completes a TLS handshake, presenting clientCert (may be nil)
	// only if the server asks for one, and returns the served leaf.
	Served(ctx context.Context, clientCert *tls.Certificate) (*x509.Certificate, error)
}

// VerifyState is the outcome of the last verified-reload check.
type VerifyState struct {
	Address string `json:"address"`
	// Verified: the endpoint serves the certificate last written.
	Verified bool `json:"verified"`
	// ServedSerial is the serial the endpoint served at the last check
	// (same format as OutputState.Serial), "" if it could not be read.
	ServedSerial string    `json:"served_serial,omitempty"`
	LastCheck    time.Time `json:"last_check,omitzero"`
	LastError    string    `json:"last_error,omitempty"`
}

// verifyServed checks, when the output has a Verify endpoint and a reload
// just ran (or nothing was verified yet since start), that the endpoint
// serves sv's leaf. It probes until VerifyTimeout; if the service still
// serves something else, it marks the reloads pending again (so the
// retry backoff re-runs them), records the failure as the output's reload
// error (status WARNING naming the output) and returns it. Called with
// syncMu held.
func (r *outputRunner) verifyServed(ctx context.Context, sv *x509svid.SVID, reloaded bool) error {
	v := r.out.Verify
	if v == nil || sv == nil || len(sv.Certificates) == 0 || (!reloaded && r.verifiedSerial == serialOf(sv)) {
		return nil
	}
	want := sv.Certificates[0]
	cert := &tls.Certificate{PrivateKey: sv.PrivateKey, Leaf: want}
	for _, c := range sv.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}

	deadline := time.Now().Add(r.out.VerifyTimeout)
	pause := verifyPollMin
	var (
		served *x509.Certificate
		perr   error
	)
	for {
		served, perr = v.Served(ctx, cert)
		if perr == nil && bytes.Equal(served.Raw, want.Raw) {
			break
		}
		if ctx.Err() != nil || !time.Now().Add(pause).Before(deadline) {
			break
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		pause = min(2*pause, verifyPollMax)
	}

	st := VerifyState{Address: v.Address(), LastCheck: time.Now()}
	if served != nil {
		st.ServedSerial = serialString(served.SerialNumber)
	}
	if perr == nil && bytes.Equal(served.Raw, want.Raw) {
		st.Verified = true
		r.verifiedSerial = serialOf(sv)
		r.m.metrics.reloadVerified.WithLabelValues(r.out.Name).Set(1)
		r.stMu.Lock()
		r.st.Verify = &st
		// Reloads that ran before this check succeeded (or none was due),
		// so a reload error left is an earlier "not verified".
		r.st.LastReloadError = ""
		r.stMu.Unlock()
		r.log.Info("reload verified: the service serves the new certificate",
			zap.String("verify", v.Address()), zap.String("serial", st.ServedSerial))
		return nil
	}

	var err error
	if perr != nil {
		err = fmt.Errorf("reload not verified after %s: %w", r.out.VerifyTimeout, perr)
	} else {
		err = fmt.Errorf("reload not verified after %s: %s serves serial %s, want %s", r.out.VerifyTimeout, v.Address(), st.ServedSerial, serialOf(sv))
	}
	st.LastError = err.Error()
	r.verifiedSerial = ""
	r.m.metrics.reloadVerified.WithLabelValues(r.out.Name).Set(0)
	if len(r.out.Reloads) > 0 {
		r.reloadPending, r.reloadNext = true, 0
	}
	r.stMu.Lock()
	r.st.Verify = &st
	r.st.LastReloadError = err.Error()
	r.stMu.Unlock()
	if ctx.Err() == nil {
		r.log.Warn("the service does not serve the certificate just written; will reload again", zap.Error(err))
	}
	return err
}
