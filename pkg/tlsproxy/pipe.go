package tlsproxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// maxRecordPlaintext is the most one TLS record can carry.
const maxRecordPlaintext = 16 << 10

// smallBufSize is what a direction reads into until a read fills it:
// thousands of idle keep-alive connections then hold 4 KiB per direction
// while they wait, not a bulk buffer.
const smallBufSize = 4 << 10

// activity is the last time (unix nanoseconds) a byte moved in either
// direction. Both directions share it, so a long upload with a silent
// download is not cut as idle.
type activity struct{ last atomic.Int64 }

func (a *activity) touch(now time.Time) { a.last.Store(now.UnixNano()) }

// pipe copies both ways between the downstream (accepted) connection and
// the upstream (dialed) one until both directions end or the connection is
// idle for IdleTimeout. A clean EOF in one direction is passed on as a
// half-close, so request/response protocols that shut down their write
// side still get their answer.
//
// tlsRaw is the batchConn under whichever side is the tls.Conn.
//
// rejected, in client mode, is called when the server's first answer is a
// TLS alert: under TLS 1.3 our handshake completes before the server has
// checked our certificate, so its refusal arrives here, not in Handshake.
func (p *Proxy) pipe(down, up net.Conn, tlsRaw *batchConn, idle time.Duration, rejected func(error)) {
	var act activity
	act.touch(time.Now())
	downEnd, upEnd := end{c: down}, end{c: up}
	if p.mode == ModeServer {
		downEnd.raw = tlsRaw
	} else {
		upEnd.raw = tlsRaw
		upEnd.rejected = rejected
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.halfPipe(upEnd, downEnd, &act, &p.stats.toTarget, idle)
	}()
	p.halfPipe(downEnd, upEnd, &act, &p.stats.fromTarget, idle)
	wg.Wait()
}

// end is one side of a pipe; raw is set when c is a tls.Conn over it.
type end struct {
	c        net.Conn
	raw      *batchConn
	rejected func(error) // a TLS alert before any data was read from c
}

// halfPipe copies src to dst. On a clean EOF it half-closes dst; on any
// other end it closes both, which also stops the other direction.
func (p *Proxy) halfPipe(dstEnd, srcEnd end, act *activity, counter *atomic.Uint64, idle time.Duration) {
	dst, src := dstEnd.c, srcEnd.c
	// The read deadline is pushed forward only when it fires while the
	// other direction was busy, so a busy stream does no deadline
	// bookkeeping per read.
	_ = src.SetReadDeadline(time.Now().Add(idle))
	var wdl time.Time // write deadline in force; refreshed lazily
	// No connection waiting for its peer holds a pooled buffer: a plain
	// socket is read through readPooled; a tls.Conn is waited on with a
	// small per-direction buffer, and only when that read comes back full
	// is a pooled buffer filled without blocking, written and returned.
	var small []byte
	var large bulkHint // this direction's next pooled buffer is large
	var rawSrc syscall.RawConn
	if srcEnd.raw == nil {
		rawSrc = rawConn(src)
	}
	if rawSrc == nil {
		small = make([]byte, smallBufSize)
	}
	relayed := false // anything read from src yet
	for {
		var (
			n    int
			err  error
			b    []byte
			bulk *relayBuf
		)
		if rawSrc != nil {
			// Plain socket: read(2) straight into a pooled buffer that is
			// taken only once data is there.
			n, bulk, err = p.readPooled(rawSrc, src, bool(large))
			if bulk != nil {
				b = bulk.chunk()
				large.observe(n, len(b))
			}
		} else {
			n, err = src.Read(small)
			b = small
			if err == nil && n == len(small) && srcEnd.raw != nil {
				bulk = p.bufs.get(bool(large))
				b = bulk.chunk()
				copy(b, small[:n])
				n, err = gatherTLS(src, b, n, idle)
				large.observe(n, len(b))
			}
		}
		if n > 0 {
			relayed = true
			now := time.Now()
			act.touch(now)
			// A peer that stops reading must not pin us forever: bound each
			// write by the idle timeout, refreshing the deadline at most
			// every idle/4 so it costs no syscall per chunk.
			if wdl.Sub(now) < idle*3/4 {
				wdl = now.Add(idle)
				_ = dst.SetWriteDeadline(wdl)
			}
			var werr error
			if dstEnd.raw != nil && n > maxRecordPlaintext {
				// Several records: one write(2) instead of one per record.
				dstEnd.raw.beginBatch(n)
				_, werr = dst.Write(b[:n])
				if ferr := dstEnd.raw.flush(); werr == nil {
					werr = ferr
				}
			} else {
				_, werr = dst.Write(b[:n])
			}
			if werr != nil {
				if bulk != nil {
					p.bufs.put(bulk)
				}
				closeBoth(dst, src)
				return
			}
			counter.Add(uint64(n))
			act.touch(time.Now())
		}
		if bulk != nil {
			p.bufs.put(bulk)
		}
		if err == nil {
			continue
		}
		if isTimeout(err) {
			last := time.Unix(0, act.last.Load())
			if time.Since(last) < idle {
				_ = src.SetReadDeadline(last.Add(idle))
				continue
			}
		}
		if errors.Is(err, io.EOF) {
			closeWrite(dst)
			return
		}
		if !relayed && srcEnd.rejected != nil && isRemoteAlert(err) {
			srcEnd.rejected(err)
		}
		closeBoth(dst, src)
		return
	}
}

// gatherTLS appends to b[:n] what the tls.Conn src can deliver without
// waiting: the rest of the current record and further records that
// batchConn already read. A deadline in the past makes reads stop,
// without a syscall, where that data ends; a partial record stays in
// crypto/tls for the next read.
func gatherTLS(src net.Conn, b []byte, n int, idle time.Duration) (int, error) {
	var err error
	_ = src.SetReadDeadline(time.Unix(1, 0))
	for n < len(b) && err == nil {
		var m int
		m, err = src.Read(b[n:])
		n += m
	}
	if isTimeout(err) {
		err = nil
	}
	_ = src.SetReadDeadline(time.Now().Add(idle))
	return n, err
}

// readPooled reads from a plain socket into a buffer from p.bufs (large if
// asked and the budget allows), waiting for data without holding one. The
// buffer is nil when nothing was read.
func (p *Proxy) readPooled(rc syscall.RawConn, c net.Conn, large bool) (int, *relayBuf, error) {
	var (
		buf  *relayBuf
		n    int
		serr error
	)
	err := rc.Read(func(fd uintptr) bool {
		if buf == nil {
			buf = p.bufs.get(large)
		}
		n, serr = readFD(fd, buf.chunk())
		if serr == syscall.EAGAIN {
			p.bufs.put(buf)
			buf = nil
			return false // wait for readability, then call again
		}
		return true
	})
	if err == nil && serr == nil && n == 0 {
		err = io.EOF
	} else if err == nil && serr != nil {
		err = &net.OpError{Op: "read", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("read", serr)}
	}
	if n == 0 && buf != nil {
		p.bufs.put(buf)
		buf = nil
	}
	return n, buf, err
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

type closeWriter interface{ CloseWrite() error }

func closeWrite(c net.Conn) {
	if cw, ok := c.(closeWriter); ok {
		if err := cw.CloseWrite(); err == nil {
			return
		}
	}
	_ = c.Close()
}

func closeBoth(a, b net.Conn) {
	_ = a.Close()
	_ = b.Close()
}
