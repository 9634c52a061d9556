package config

// Formats are an output's files beyond cert/key/bundle, and the check
// that a reload took. They are inlined into Output: the YAML keys sit
// beside cert_file. Files holding the key take key_mode, the others
// bundle_mode; no format has a mode of its own, so none is ever wider.
type Formats struct {
	// CombinedFile gets the PKCS#8 key and the chain in one PEM file
	// (HAProxy crt, MongoDB certificateKeyFile, Postgres sslcert+sslkey in
	// one, Python's load_cert_chain). Mode key_mode.
	CombinedFile string `yaml:"combined_file"`
	// CombinedOrder is key_first (default) or chain_first.
	CombinedOrder string `yaml:"combined_order"`
	// Layout "spiffe-fs-delivery" (rotation.LayoutSPIFFEFSDelivery) writes
	// the directory as a SPIFFE Filesystem Delivery credential folder.
	Layout string `yaml:"layout"`
	// BundleDir is a subdirectory of dir with one <trust-domain>.pem per
	// trust domain, own and federated, never merged.
	BundleDir string `yaml:"bundle_dir"`
	// PKCS12 keystore and truststore for Java and .NET.
	PKCS12 *PKCS12 `yaml:"pkcs12"`
	// Verify, after each reload, that the service serves the new SVID.
	Verify *Verify `yaml:"verify"`
}

// PKCS12 names the PKCS#12 files and their password file.
type PKCS12 struct {
	KeystoreFile   string `yaml:"keystore_file"`   // key + chain; mode key_mode
	TruststoreFile string `yaml:"truststore_file"` // roots (federated with include_federated); mode bundle_mode
	// PasswordFile holds the password (trailing line breaks are ignored);
	// read at every write, never logged.
	PasswordFile string `yaml:"password_file"`
}

// Verify is where the service serves TLS, to check its certificate.
type Verify struct {
	// Address is tcp://host:port or unix:///path.
	Address string `yaml:"address"`
	// ServerName is the SNI to send (default none).
	ServerName string `yaml:"server_name"`
	// Timeout is how long after a reload the service may take to serve
	// the new certificate (default 10s).
	Timeout Duration `yaml:"timeout"`
}

// validateFormats checks the format fields' shape in the file; their
// values and names are checked where they are consumed (svid's combined
// order, rotation.Output.Validate: layout, names, the PKCS#12 password
// file, verify's certificate; tlsprobe: the verify address).
func validateFormats(v *validator, p func(...any) []any, o Output) {
	f := o.Formats
	if f.CombinedOrder != "" && f.CombinedFile == "" {
		v.errorf(p("combined_order"), "is set but combined_file is not")
	}
	if k := f.PKCS12; k != nil && k.KeystoreFile == "" && k.TruststoreFile == "" {
		v.errorf(p("pkcs12"), "set keystore_file, truststore_file or both")
	}
	if vf := f.Verify; vf != nil {
		if vf.Address == "" {
			v.errorf(p("verify", "address"), "is required (tcp://host:port or unix:///path)")
		}
		if vf.Timeout < 0 {
			v.errorf(p("verify", "timeout"), "must not be negative")
		}
	}
}
