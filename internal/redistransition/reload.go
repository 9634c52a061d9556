package redistransition

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/identity-agent/identity-agent/internal/promreg"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/identity-agent/identity-agent/pkg/rotation"
)

// TLSFiles are the certificate files as the Redis server sees them.
type TLSFiles struct {
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
	CAFile   string `json:"ca_file"`
}

var tlsFileKeys = []string{"tls-cert-file", "tls-key-file", "tls-ca-cert-file"}

func (f TLSFiles) pairs() [][2]string {
	return [][2]string{{"tls-cert-file", f.CertFile}, {"tls-key-file", f.KeyFile}, {"tls-ca-cert-file", f.CAFile}}
}

// ConfigSetReloader tells a running Redis to load its TLS files again.
// Redis ignores signals for this; it rereads the files when a tls-* file
// setting is set with CONFIG SET, even to the same value. It satisfies
// pkg/rotation's Reloader interface (Kind, Reload).
type ConfigSetReloader struct {
	admin AdminConfig
	files TLSFiles
	log   *zap.Logger
	opts  []Option
	total *prometheus.CounterVec
}

// NewConfigSetReloader returns the "redis" reload action. files are the
// files to set: an absolute path is set as is; any other entry names a
// file of the output's set ("tls.crt") and is set to the path each reload
// is told (rotation.Written), so nobody joins the output's directory and
// names twice. An empty TLSFiles re-sets whatever the server has
// configured now (useful when the agent does not know the server's view of
// the paths). The admin connection is opened per reload and closed after:
// reloads are rare and no goroutine is held between them.
func NewConfigSetReloader(admin AdminConfig, files TLSFiles, o ...Option) (*ConfigSetReloader, error) {
	if _, err := admin.target(); err != nil {
		return nil, err
	}
	n := 0
	for _, p := range files.pairs() {
		if p[1] != "" {
			n++
		}
	}
	if n != 0 && n != 3 {
		return nil, fmt.Errorf("redis reload: give all of cert_file, key_file, ca_file or none (to re-set the server's own)")
	}
	s := newSettings(o)
	return &ConfigSetReloader{admin: admin, files: files, log: s.logger, opts: o,
		total: promreg.Shared(s.reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "identity_agent_redis_tls_reloads_total", Help: "CONFIG SET TLS reloads sent to Redis, by result.",
		}, []string{"result"}))}, nil
}

// Kind is "redis".
func (r *ConfigSetReloader) Kind() string { return "redis" }

// Reload sends CONFIG SET tls-cert-file … tls-key-file … tls-ca-cert-file …
// with the paths of w for the files named by name.
func (r *ConfigSetReloader) Reload(ctx context.Context, w rotation.Written) error {
	err := r.reload(ctx, w)
	if err != nil {
		r.total.WithLabelValues("error").Inc()
		return err
	}
	r.total.WithLabelValues("ok").Inc()
	return nil
}

func (r *ConfigSetReloader) reload(ctx context.Context, w rotation.Written) error {
	files, err := r.files.in(w)
	if err != nil {
		return fmt.Errorf("redis reload: %w", err)
	}
	a, err := NewAdmin(r.admin, r.opts...)
	if err != nil {
		return err
	}
	defer func() { _ = a.Close() }()
	if files.CertFile == "" {
		cur, err := a.ConfigGet(ctx, tlsFileKeys...)
		if err != nil {
			return fmt.Errorf("redis reload: %w", err)
		}
		files = TLSFiles{CertFile: cur["tls-cert-file"], KeyFile: cur["tls-key-file"], CAFile: cur["tls-ca-cert-file"]}
		if files.CertFile == "" || files.KeyFile == "" {
			return fmt.Errorf("redis reload via %s: the server has no tls-cert-file/tls-key-file configured; nothing to reload", r.admin.Addr)
		}
	}
	kv := files.pairs()
	if files.CAFile == "" {
		kv = kv[:2]
	}
	if err := a.ConfigSet(ctx, kv); err != nil {
		return fmt.Errorf("redis reload: %w", err)
	}
	r.log.Info("redis reloaded its TLS files", zap.String("admin", r.admin.Addr), zap.String("cert_file", files.CertFile))
	return nil
}

// in resolves the entries that name files of the written set to their
// paths; absolute paths and empty entries stay as they are.
func (f TLSFiles) in(w rotation.Written) (TLSFiles, error) {
	for _, p := range []*string{&f.CertFile, &f.KeyFile, &f.CAFile} {
		if *p == "" || filepath.IsAbs(*p) {
			continue
		}
		abs, err := w.Path(*p)
		if err != nil {
			return f, err
		}
		*p = abs
	}
	return f, nil
}
