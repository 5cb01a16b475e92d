package live

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
)

// Publishing "to others": a publication that skips the connection that
// caused it, or every connection of its user, on every hub. The exclusion
// travels with the publication through the broker, in an envelope that
// hubs open before anything else reads the publication.

// ConnectionHeader names the client connection a request comes from: the
// "connection" member of the "subscribed" frames a connection gets. live.js
// sends it with its writes, so that [Except] and [HookOptions].ToOthers can
// skip the connection that made a change, which applied it already.
const ConnectionHeader = "Live-Connection"

// exceptPrefix starts an envelope. The hub wraps any publication that
// starts so itself, so a publisher cannot forge one.
var exceptPrefix = []byte(`{"@live:except":`)

// except names who a publication skips.
type except struct {
	Conn string `json:"conn,omitempty"`
	User string `json:"user,omitempty"`
}

// envelope is a publication with its exclusion.
type envelope struct {
	Except *except         `json:"@live:except"`
	Data   json.RawMessage `json:"data"`
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

// seal wraps data in an envelope when ctx carries an exclusion, or when
// data could be taken for an envelope.
func seal(ctx context.Context, data []byte) []byte {
	ex, _ := ctx.Value(exceptKey{}).(*except)
	if ex == nil && !bytes.HasPrefix(data, exceptPrefix) {
		return data
	}
	b, _ := json.Marshal(envelope{Except: ex, Data: data})
	return b
}

// unseal opens an envelope; other data it returns as it is.
func unseal(data []byte) ([]byte, *except) {
	if !bytes.HasPrefix(data, exceptPrefix) {
		return data, nil
	}
	var e envelope
	if json.Unmarshal(data, &e) != nil || e.Data == nil {
		return []byte("null"), nil
	}
	return e.Data, e.Except
}

// skips reports whether the exclusion skips c.
func (e *except) skips(c *conn) bool {
	return e.Conn != "" && e.Conn == c.key || e.User != "" && c.id != nil && c.id.User == e.User
}

// newConnKey returns a connection's name: random, so that a client cannot
// name another's connection to keep a publication from it.
func newConnKey() string {
	var b [12]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
