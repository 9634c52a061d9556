package clientlist_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/identity-agent/identity-agent/internal/clientlist"
)

func TestParse(t *testing.T) {
	reply := "id=3 addr=127.0.0.1:5000 laddr=127.0.0.1:6379 fd=8 name=api cmd=client|list\r\n" +
		"\n" +
		"id=4 addr=/run/redis.sock:0 laddr=/run/redis.sock:0 fd=9 name= junk\n" +
		"id=5 addr=[::1]:5001 laddr=[::1]:6380 name=web\n"
	cs := clientlist.Parse(reply)
	assert.Len(t, cs, 3, "blank lines are not clients")
	assert.Equal(t, "3", cs[0]["id"])
	assert.Equal(t, "client|list", cs[0]["cmd"], "a trailing \\r is not part of the last value")
	assert.Equal(t, "6379", cs[0].LocalPort())
	assert.Equal(t, "", cs[1].LocalPort(), "unix socket")
	assert.Equal(t, "", cs[1]["name"])
	_, ok := cs[1]["junk"]
	assert.False(t, ok, "a field without = is skipped")
	assert.Equal(t, "6380", cs[2].LocalPort())
	assert.Equal(t, "", clientlist.Port("not an address"))
}
