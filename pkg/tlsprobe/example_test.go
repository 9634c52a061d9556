package tlsprobe_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/identity-agent/identity-agent/pkg/tlsprobe"
)

// After a reload, ask the service which certificate it now serves and
// compare it with the one just written. Here the service is an httptest
// TLS server standing in for Redis or uvicorn.
func ExampleProber_Served() {
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the probe hangs up after the handshake
	srv.StartTLS()
	defer srv.Close()
	written := srv.Certificate() // what the agent would have just written

	p, err := tlsprobe.New("tcp://"+strings.TrimPrefix(srv.URL, "https://"),
		tlsprobe.WithServerName("example.com"))
	if err != nil {
		fmt.Println(err)
		return
	}
	leaf, err := p.Served(context.Background(), nil)
	if err != nil {
		fmt.Println("not serving TLS yet:", err)
		return
	}
	fmt.Println("serves what was written:", leaf.SerialNumber.Cmp(written.SerialNumber) == 0 && leaf.Equal(written))
	// Output: serves what was written: true
}

// ParseAddress takes the two address forms verify: accepts.
func ExampleParseAddress() {
	for _, a := range []string{"tcp://127.0.0.1:6380", "unix:///run/redis/redis.sock", "127.0.0.1:6380"} {
		network, addr, err := tlsprobe.ParseAddress(a)
		fmt.Printf("%q %q error=%v\n", network, addr, err != nil)
	}
	// Output:
	// "tcp" "127.0.0.1:6380" error=false
	// "unix" "/run/redis/redis.sock" error=false
	// "" "" error=true
}
