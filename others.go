package live

import (
	"context"
	"crypto/rand"
	"encoding/base64"
)

// Publishing "to others": a publication that skips the connection that
// caused it, or every connection of its user, on every hub. The exclusion
// travels with the publication through the broker, in its meta (see
// [Message]), beside the data and never inside it, so no data can be taken
// for one.

// ConnectionHeader names the client connection a request comes from: the
// "connection" member of the "subscribed" frames a connection gets. live.js
// sends it with its writes, so that [Except] and [HookOptions].ToOthers can
// skip the connection that made a change, which applied it already.
const ConnectionHeader = "Live-Connection"

// except names who a publication skips.
type except struct {
	Conn string `json:"conn,omitempty"`
	User string `json:"user,omitempty"`
}

type exceptKey struct{}

// Except returns a context under which [Hub.Publish] skips the client
// connection conn (a [ConnectionHeader] value; "" for none) and, when user
// is not "", every connection of that user, on every Hub sharing the
// broker. Use it for clients that apply their own changes optimistically
// and would otherwise apply them twice; clients that send mutation ids
// recognise the echo and need nothing. The skip applies to live delivery:
// a client that reconnects and resumes may get the publication from
// history, and it is not a way to keep data from anyone.
func Except(ctx context.Context, conn, user string) context.Context {
	if conn == "" && user == "" {
		return ctx
	}
	return context.WithValue(ctx, exceptKey{}, &except{Conn: conn, User: user})
}

// exceptOf returns the exclusion ctx carries, if any. A connection name
// longer than any the hub makes names no connection and is dropped, so
// that a client's header cannot make the meta large.
func exceptOf(ctx context.Context) *except {
	ex, _ := ctx.Value(exceptKey{}).(*except)
	if ex != nil && len(ex.Conn) > maxConnKeyLen {
		ex = &except{User: ex.User}
		if ex.User == "" {
			return nil
		}
	}
	return ex
}

// skips reports whether the exclusion skips c.
func (e *except) skips(c *conn) bool {
	return e.Conn != "" && e.Conn == c.key || e.User != "" && c.id != nil && c.id.User == e.User
}

const (
	connKeyBytes  = 12
	maxConnKeyLen = 2 * connKeyBytes // base64 needs 16; room to change
)

// newConnKey returns a connection's name: random, so that a client cannot
// name another's connection to keep a publication from it.
func newConnKey() string {
	var b [connKeyBytes]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// NewConnectionID returns a new, random name for a client connection, of
// the form the hub gives its own connections. A server-rendered page
// (htmx, Turbo, Datastar) that publishes "to others" mints one per page
// view, names its one-channel SSE stream with it,
//
//	/live/feed?cursor=<position>&connection=<id>
//
// and sends it back as the [ConnectionHeader] of its writes, as htmx does
// with hx-headers='{"Live-Connection":"<id>"}'; then [Except] and
// [HookOptions].ToOthers skip that page's stream, which shows the change
// already.
//
// An id is no secret and grants nothing. A client that names another's
// id, in its stream URL or in its header, can only make its own stream
// miss the other's changes, or its own writes skip the other's stream:
// what anyone else publishes still reaches every connection. Excepting a
// user ([Except]'s user) goes by the identity the hub found, never by an
// id a client names.
func NewConnectionID() string { return newConnKey() }

// validConnKey reports whether key is a connection name as newConnKey
// makes them, within the room maxConnKeyLen leaves.
func validConnKey(key string) bool {
	if len(key) < base64.RawURLEncoding.EncodedLen(connKeyBytes) || len(key) > maxConnKeyLen {
		return false
	}
	for i := 0; i < len(key); i++ {
		switch c := key[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}
