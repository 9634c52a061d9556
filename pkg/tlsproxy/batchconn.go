package tlsproxy

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// batchConn sits under a tls.Conn and cuts the syscalls of a bulk
// transfer, which on loopback cost more than the AES-GCM itself:
//
//   - Writes: crypto/tls writes each 16 KiB record with its own write(2).
//     Between beginBatch and flush the records are collected and written
//     with one call.
//   - Reads: crypto/tls reads into a small buffer, about one or two
//     records per read(2). Once a read fills the caller's buffer (so more
//     is likely waiting), reads go through a pooled buffer instead, taken
//     only once data is there (see readPooled), and a large one once those
//     reads fill too. Idle connections hold no pooled buffer.
type batchConn struct {
	net.Conn
	pool *bufPool

	wmu      sync.Mutex // orders our batch against writes crypto/tls makes from the reading goroutine (alerts)
	batching bool
	wbuf     *relayBuf
	wlen     int

	// Read side: used only by the goroutine reading the tls.Conn.
	rc    syscall.RawConn // nil if the connection has no file descriptor
	rbuf  *relayBuf
	r, w  int
	bulk  bool
	large bulkHint
	// onFirstRead, if set, runs once when the first bytes arrive.
	onFirstRead func()
	// onFirstWrite, if set, runs once before the first write (guarded by wmu).
	onFirstWrite func()
}

func newBatchConn(c net.Conn, pool *bufPool) *batchConn {
	return &batchConn{Conn: c, pool: pool, rc: rawConn(c)}
}

// rawConn returns c's syscall.RawConn, or nil if it has none.
func rawConn(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

func (c *batchConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.onFirstWrite != nil {
		f := c.onFirstWrite
		c.onFirstWrite = nil
		f()
	}
	if c.batching && c.wlen+len(p) <= len(c.wbuf.b) {
		c.wlen += copy(c.wbuf.b[c.wlen:], p)
		return len(p), nil
	}
	if c.batching && c.wlen > 0 {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return c.Conn.Write(p)
}

// beginBatch starts collecting the records of an n-byte plaintext write.
func (c *batchConn) beginBatch(n int) {
	c.wmu.Lock()
	c.batching = true
	if c.wbuf == nil {
		c.wbuf = c.pool.get(n > smallChunk)
	}
	c.wmu.Unlock()
}

// flush writes the batch and ends batching. The buffer goes back to the pool.
func (c *batchConn) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	err := c.flushLocked()
	c.batching = false
	if c.wbuf != nil {
		c.pool.put(c.wbuf)
		c.wbuf = nil
	}
	return err
}

func (c *batchConn) flushLocked() error {
	if c.wlen == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.wbuf.b[:c.wlen])
	c.wlen = 0
	return err
}

func (c *batchConn) Read(p []byte) (int, error) {
	if c.r < c.w {
		n := copy(p, c.rbuf.b[c.r:c.w])
		c.r += n
		if c.r == c.w {
			c.releaseRead()
		}
		return n, nil
	}
	if !c.bulk || c.rc == nil {
		n, err := c.Conn.Read(p)
		if n > 0 && c.onFirstRead != nil {
			f := c.onFirstRead
			c.onFirstRead = nil
			f()
		}
		if n == len(p) && n > 0 {
			c.bulk = true
		}
		return n, err
	}
	n, err := c.readPooled()
	if n == 0 {
		// Nothing read (deadline, EOF, error): no reason to leave bulk mode.
		return 0, err
	}
	c.large.observe(n, len(c.rbuf.b))
	if n < len(c.rbuf.b)/8 {
		c.bulk = false
	}
	c.w = n
	m := copy(p, c.rbuf.b[:n])
	c.r = m
	if c.r == c.w {
		c.releaseRead()
	}
	return m, nil
}

// readPooled reads what the kernel has into a pooled buffer. It waits for
// data without holding the buffer, so a connection that goes quiet after
// a bulk transfer pins no memory.
func (c *batchConn) readPooled() (int, error) {
	var (
		n    int
		serr error
	)
	err := c.rc.Read(func(fd uintptr) bool {
		if c.rbuf == nil {
			c.rbuf = c.pool.get(bool(c.large))
		}
		n, serr = readFD(fd, c.rbuf.b[:])
		if serr == syscall.EAGAIN {
			c.releaseRead()
			return false // wait for readability, then call again
		}
		return true
	})
	switch {
	case err != nil: // deadline or closed, from the poller
		c.releaseRead()
		return 0, err
	case serr != nil:
		c.releaseRead()
		return 0, &net.OpError{Op: "read", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("read", serr)}
	case n == 0:
		c.releaseRead()
		return 0, io.EOF
	}
	return n, nil
}

// readFD is read(2) retried on EINTR.
func readFD(fd uintptr, b []byte) (int, error) {
	for {
		n, err := syscall.Read(int(fd), b)
		if err != syscall.EINTR {
			if n < 0 {
				n = 0
			}
			return n, err
		}
	}
}

func (c *batchConn) releaseRead() {
	if c.rbuf != nil {
		c.pool.put(c.rbuf)
	}
	c.rbuf, c.r, c.w = nil, 0, 0
}

// Buffered is the number of received bytes not yet handed to crypto/tls.
func (c *batchConn) Buffered() int { return c.w - c.r }

// Close returns buffers to the pool; the tls.Conn above is done with them.
func (c *batchConn) Close() error {
	return c.Conn.Close()
}
