package secretfile_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/secretfile"
)

// The rule: trailing line breaks (\n, \r\n, any number) are not part of
// the password, as in a shell's "$(cat FILE)"; every other byte is.
func TestReadStripsTrailingLineBreaksOnly(t *testing.T) {
	for _, c := range []struct{ file, want string }{
		{"s3cret", "s3cret"},
		{"s3cret\n", "s3cret"},         // echo s3cret > FILE
		{"s3cret\r\n", "s3cret"},       // a Windows editor
		{"s3cret\n\n", "s3cret"},       // "$(cat FILE)" drops them all
		{" s3cret \t\n", " s3cret \t"}, // spaces are password bytes
		{"two\nlines\n", "two\nlines"}, // inner breaks are kept
		{"\ns3cret\n", "\ns3cret"},     // so are leading ones
	} {
		p := filepath.Join(t.TempDir(), "pw")
		require.NoError(t, os.WriteFile(p, []byte(c.file), 0o600))
		got, err := secretfile.Read(p)
		require.NoError(t, err, "%q", c.file)
		assert.Equal(t, c.want, got, "%q", c.file)
	}
}

func TestReadEmptyAndMissingNameTheFileNotTheContent(t *testing.T) {
	dir := t.TempDir()
	for _, content := range []string{"", "\n", "\r\n\r\n"} {
		p := filepath.Join(dir, "empty")
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		_, err := secretfile.Read(p)
		require.ErrorIs(t, err, secretfile.ErrEmpty, "%q", content)
		assert.Equal(t, p+": empty", err.Error())
	}
	_, err := secretfile.Read(filepath.Join(dir, "missing"))
	require.ErrorIs(t, err, os.ErrNotExist)
	assert.Contains(t, err.Error(), filepath.Join(dir, "missing"))
}
