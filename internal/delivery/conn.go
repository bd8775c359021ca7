package delivery

import (
	"context"
	"net"
	"sync"
	"time"
)

// trackedConn is the TCP connection under an SMTP client (and under TLS when
// used). It caps every deadline go-smtp sets at the deadline of the context
// bound with bind, and records failed writes so that a lost reply after the
// final dot can be told apart from a dot that was never sent.
type trackedConn struct {
	net.Conn

	mu       sync.Mutex
	limit    time.Time // deadline of the bound context; zero if none
	writeErr bool      // a write failed since the last resetWriteErr
}

// bind caps deadlines at ctx's deadline and closes the connection when ctx
// is done, which interrupts any blocked read or write. unbind removes both
// and reports whether the connection is still open (ctx did not fire).
func (c *trackedConn) bind(ctx context.Context) (unbind func() bool) {
	dl, _ := ctx.Deadline()
	c.mu.Lock()
	c.limit = dl
	c.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { _ = c.Conn.Close() })
	return func() bool {
		open := stop()
		c.mu.Lock()
		c.limit = time.Time{}
		c.mu.Unlock()
		return open
	}
}

func (c *trackedConn) clamp(t time.Time) time.Time {
	c.mu.Lock()
	limit := c.limit
	c.mu.Unlock()
	if !limit.IsZero() && (t.IsZero() || limit.Before(t)) {
		return limit
	}
	return t
}

func (c *trackedConn) SetDeadline(t time.Time) error      { return c.Conn.SetDeadline(c.clamp(t)) }
func (c *trackedConn) SetReadDeadline(t time.Time) error  { return c.Conn.SetReadDeadline(c.clamp(t)) }
func (c *trackedConn) SetWriteDeadline(t time.Time) error { return c.Conn.SetWriteDeadline(c.clamp(t)) }

func (c *trackedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err != nil {
		c.mu.Lock()
		c.writeErr = true
		c.mu.Unlock()
	}
	return n, err
}

func (c *trackedConn) resetWriteErr() {
	c.mu.Lock()
	c.writeErr = false
	c.mu.Unlock()
}

func (c *trackedConn) wroteErr() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writeErr
}
