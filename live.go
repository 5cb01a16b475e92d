package live

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Version is the release of this module, and of the browser client it
// serves: the npm package @go-live/live (client/package.json) carries the
// same version, and the release is tagged "v" + Version.
const Version = "0.1.0"

// Errors reported by the Hub and by brokers. Compare with [errors.Is]: they
// usually arrive wrapped with the operation that failed.
var (
	// ErrClosed reports use of a Hub or Broker after Close.
	ErrClosed = errors.New("live: closed")

	// ErrGone reports that a position can no longer be replayed: it is
	// older than the history a broker keeps, belongs to another epoch, or
	// lies beyond the channel's head. A client resuming from it must
	// refetch.
	ErrGone = errors.New("live: position gone from history")

	// ErrForbidden is what an Authorize hook returns, wrapped or not, to
	// refuse an operation. Any other error refuses it too; this one merely
	// reads well.
	ErrForbidden = errors.New("live: forbidden")

	// ErrUnknownChannel is what an Authorize hook returns for a channel the
	// application does not serve: HTTP requests then get 404, not 403.
	ErrUnknownChannel = errors.New("live: unknown channel")

	// ErrTooLarge reports a publication larger than half of
	// [Options].QueueBytes, which the Hub refuses: a client's queue must
	// hold it and what follows it.
	ErrTooLarge = errors.New("live: publication too large")

	// ErrConflict reports a conditional write that lost: a [State] whose
	// version has moved on, or a [Conditional] broker's channel whose head
	// is no longer the position expected. Over HTTP it is a 412 whose JSON
	// body carries the current version, so the client can refetch and
	// retry.
	ErrConflict = errors.New("live: version conflict")
)

// Position locates a publication on a channel. Seq counts publications on
// the channel from 1 without gaps; Epoch names the lifetime of the
// channel's numbering and changes whenever a broker can no longer vouch
// for earlier numbers (for example after losing its data). Positions are
// assigned by the Broker, so every Hub sharing a broker agrees on them.
//
// The zero Seq means "before the first publication".
//
// A position has one name in Go and two on the wire, each where its
// clients expect it. Its text form, [Position.String], is the cursor: the
// SSE event id (sent back as Last-Event-ID), the "cursor" of WebSocket and
// multiplexed frames, and ?cursor= in a stream's URL; [ParsePosition]
// reads it back. A [State]'s version is the Seq of the position of the
// publication that made its value, a bare number because React's
// useDeltaSync expects one ({"version":N}, ?version=N), always read in the
// channel's current epoch.
type Position struct {
	Epoch string
	Seq   uint64
}

// String returns the position as a cursor, "<seq>.<epoch>", the form in
// which clients hold it and send it back to resume.
func (p Position) String() string {
	return strconv.FormatUint(p.Seq, 10) + "." + p.Epoch
}

// maxEpochLen bounds the epoch part of a cursor, so that parsing never
// keeps a large attacker-chosen string.
const maxEpochLen = 64

// ParsePosition parses a cursor, the text form [Position.String] makes.
// Epochs are 1 to 64 characters from [A-Za-z0-9_-].
func ParsePosition(s string) (Position, error) {
	seqPart, epoch, ok := strings.Cut(s, ".")
	if !ok || !validEpoch(epoch) {
		return Position{}, fmt.Errorf("live: malformed cursor %.80q", s)
	}
	seq, ok := parseSeq(seqPart)
	if !ok {
		return Position{}, fmt.Errorf("live: malformed cursor %.80q", s)
	}
	return Position{Epoch: epoch, Seq: seq}, nil
}

// parseSeq parses a sequence number or version the one way the hub writes
// them: decimal digits, without a sign or leading zeros.
func parseSeq(s string) (uint64, bool) {
	if len(s) > 1 && s[0] == '0' || len(s) > 0 && (s[0] == '+' || s[0] == '-') {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

func validEpoch(e string) bool {
	if len(e) == 0 || len(e) > maxEpochLen {
		return false
	}
	for i := 0; i < len(e); i++ {
		c := e[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// MaxChannelLen is the longest channel name accepted.
const MaxChannelLen = 128

// ValidChannel reports whether name may be used as a channel: 1 to
// [MaxChannelLen] bytes of ASCII letters, digits and the punctuation
// "_-:.@=+", other than "." and "..". Slashes and dot segments are excluded
// so a channel is always one URL path segment.
func ValidChannel(name string) error {
	if len(name) == 0 || len(name) > MaxChannelLen {
		return fmt.Errorf("live: channel name must be 1 to %d bytes", MaxChannelLen)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("live: channel name %q is a dot segment", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		switch c {
		case '_', '-', ':', '.', '@', '=', '+':
			continue
		}
		return fmt.Errorf("live: channel name %.140q has a character outside [A-Za-z0-9_-:.@=+]", name)
	}
	return nil
}

// Message is one publication as a Broker delivers it.
type Message struct {
	Channel string
	Pos     Position
	// Data is the published JSON value, compact (no newlines).
	Data json.RawMessage
	// Meta is what the Hub that made the publication said of it to the
	// other hubs, carried beside Data so that no data is ever read as it:
	// nil for a publication not made by a Hub. A Broker stores the meta
	// [CheckPublish] returned when the publication was made and gives it
	// back as it was. Only hubs read it.
	Meta []byte
}

// A Broker carries publications between the Hubs that share it, numbers
// them, and usually keeps some history. The in-memory broker made by
// [NewMemoryBroker] serves one process; a broker on a shared server lets
// several processes serve the same channels. The brokertest package checks
// an implementation against this contract.
//
// Contract:
//
//   - Publish runs [CheckPublish] first, and publishes the data it
//     returns with its meta, or refuses with its error. So does any other
//     way the broker offers to publish.
//   - Publish appends data to channel and returns its position: the
//     channel's previous Seq plus one, in the channel's current epoch. It
//     returns only after the publication is durable to the extent the
//     broker promises and visible to History; it never reports success for
//     a publication it did not take (an error may still hide one that was
//     taken: subscribers see it, numbered without a gap). The broker may
//     keep data; the caller must not modify it afterwards. After Close it
//     returns ErrClosed.
//   - Subscribe blocks until ctx ends and then returns nil. Once the
//     subscription is active it calls ready exactly once with the channel's
//     head, the position of the latest publication (Seq 0 for none, in the
//     epoch the first publication will have). After
//     that it calls deliver for every later publication, in position order,
//     with its Meta, each exactly once, from one goroutine at a time. If the broker can no
//     longer guarantee that (a lost connection, a gap it detects), Subscribe
//     returns a non-nil error instead of skipping; the caller subscribes
//     again and fills the hole from History. After Close it returns
//     ErrClosed.
//   - deliver and ready must not block: the Hub only queues work in them.
//     A broker may stall its other subscribers while they run, but it never
//     waits on a consumer's network connection. Slow consumers are the
//     Hub's concern (see [Options].QueueBytes).
//   - Channels are independent: order holds within a channel, not across
//     channels.
//
// Brokers must be safe for concurrent use.
type Broker interface {
	Publish(ctx context.Context, channel string, data []byte) (Position, error)
	Subscribe(ctx context.Context, channel string, ready func(head Position), deliver func(Message)) error
}

// Follower is implemented by brokers that follow a channel without a
// goroutine of the caller's: a Hub then follows many channels (one per
// user, per document, per room) at the cost of their state alone, and
// uses Follow in place of Subscribe.
//
// Follow starts following channel and returns without waiting for the
// broker. It keeps Subscribe's promises, with the callbacks called on the
// broker's goroutines, or on the caller's before Follow returns: ready
// exactly once when the subscription is active, with the channel's head;
// then deliver for every later publication, in position order, with its
// Meta, each exactly once, one call at a time. When it can no longer keep
// them (a lost connection, a gap it detects, Close: ErrClosed), it calls
// ended once with the error, where Subscribe would return it, and nothing
// after that; the caller follows again and fills the hole from History.
// The callbacks must not block and must not call stop.
//
// stop ends the follow: once it has returned, no callback is running or
// will be called. After ended, or a second time, it does nothing. An
// error from Follow (an invalid name, a closed broker: ErrClosed) means
// that nothing was started: no callback is called, and stop is nil.
//
// A broker that wraps another by embedding it, and changes Subscribe,
// must change Follow too (or hide it), or the Hub follows past the change.
type Follower interface {
	Follow(channel string, ready func(head Position), deliver func(Message), ended func(error)) (stop func(), err error)
}

// History is implemented by brokers that keep recent publications, which
// lets clients resume after a disconnection without losing anything.
//
// Since returns the publications on channel after the position after, up
// to the head, in order. It returns ErrGone (wrapped or not) if after is
// from another epoch, lies beyond the head, or is older than the retained
// history, so that the next publication cannot be returned; on a channel
// it has no record of, it returns ErrGone. Since(head) returns nothing and
// no error. A publication
// is visible to Since, with its Meta, before any subscriber sees it
// delivered. Since must
// find its starting point without scanning the whole history.
type History interface {
	Since(ctx context.Context, channel string, after Position) ([]Message, error)
}

// Conditional is implemented by brokers that can publish on condition
// that a channel has not moved on, deciding it where the order of
// publications is decided, so that a compare-and-publish holds across
// every Hub sharing the broker. A [State]'s conditional writes (If-Match,
// SetIf, ApplyIf) use it; without it they are checked against each Hub's
// own copy only.
//
// PublishIf is Publish if the channel's head, the position of its latest
// publication, is head (Seq 0, in the epoch the first publication will
// have, as Subscribe's ready reports it, for a channel without any). If
// it is not, PublishIf takes nothing and returns an error matching
// ErrConflict. The comparison and the append are one step: of several
// calls with the same head, on any brokers sharing a server, at most one
// succeeds, at head's Seq plus one. The other clauses of Publish apply,
// [CheckPublish] first: a Hub's conditional publication carries its meta,
// and an application's is refused on a reserved channel or for data that
// is not JSON before its condition is looked at.
type Conditional interface {
	PublishIf(ctx context.Context, channel string, head Position, data []byte) (Position, error)
}

// Snapshots is implemented by brokers that keep, beside a channel's
// history, the latest value a [State] wrote on it. A Hub that comes to a
// State late, or finds a hole in its stream that history can no longer
// fill (a broker link cut for longer than history holds), rebuilds the
// value from the snapshot and the history after it. Without Snapshots it
// can rebuild only from history that reaches back to the channel's first
// publication, and otherwise answers 503 until a write replaces the value
// whole.
//
// SaveSnapshot keeps data as the channel's value at pos, unless the one
// kept is at a later position of pos's epoch. Snapshot returns the one
// kept; ErrGone (wrapped or not) when there is none.
type Snapshots interface {
	SaveSnapshot(ctx context.Context, channel string, pos Position, data []byte) error
	Snapshot(ctx context.Context, channel string) (Position, []byte, error)
}

// PagedHistory is implemented by brokers that can read a part of their
// history. The Hub replays what a resuming client missed a page at a time,
// as the client reads it, so that a client resuming from far back holds
// one page in memory rather than the whole range, however slowly it reads.
// Without it, the Hub reads the range whole with Since.
//
// SincePage is Since stopped early: it returns the first publications
// after the position after, in order, at most maxMessages of them and at
// most maxBytes of Data in all, but always at least one when there is one
// (however large). The caller continues from the last one returned. Its
// errors are Since's: ErrGone when the publication after after is gone
// or after is not a position of the channel; a page that ends before the
// head is no error.
type PagedHistory interface {
	History
	SincePage(ctx context.Context, channel string, after Position, maxMessages, maxBytes int) ([]Message, error)
}

// Identity is who a connection belongs to, as [Options].Identify says:
// Authorize reads it with [IdentityOf], and [Hub.Disconnect] and
// [Hub.Reauthorize] find connections by it.
type Identity struct {
	// User is a stable id of the person; "" is anonymous. Two tabs of one
	// user are two connections of one User.
	User string

	// Info is a small public record of the user (a name, an avatar's
	// URL) that other clients may be shown. Encoded as JSON it may take
	// at most 1 KiB: a larger one refuses the request (500,
	// "identity_too_large") and is logged, since it is the application's
	// mistake.
	Info any

	// Expires, when set, is when the credential Identify read stops being
	// good (a token's exp, a session's end). The hub ends each connection
	// of the identity then, with close code 4003 "credentials expired"
	// (see docs/operations.md), after asking clients that can to refresh
	// it first with a "refresh" frame. Identify returning an identity
	// already expired refuses the request (401, "credentials_expired").
	// Zero: never.
	Expires time.Time
}

// maxInfoBytes bounds an Identity's Info, encoded.
const maxInfoBytes = 1 << 10

type identityKey struct{}

// IdentityOf returns the identity Options.Identify gave the request, for
// Options.Authorize. Outside a hub's handlers, or without Identify, it is
// the zero Identity.
func IdentityOf(r *http.Request) Identity {
	id, _ := r.Context().Value(identityKey{}).(Identity)
	return id
}

// Op names an operation that an Authorize hook decides on.
type Op string

// Operations passed to [Options].Authorize.
const (
	OpSubscribe Op = "subscribe" // receive a channel, including replayed history
	OpPublish   Op = "publish"   // publish from a client, over WebSocket or HTTP POST
)

// defaultAuthorize allows subscribing to any valid channel and refuses
// publishing from clients: server code publishes with Hub.Publish.
func defaultAuthorize(_ *http.Request, _ string, op Op) error {
	if op == OpPublish {
		return Deny("clients may not publish here")
	}
	return nil
}

// Deny returns an error for [Options].Authorize that refuses with a
// message meant for the client: the hub sends msg as it is, in the 403
// body or the error frame. The text of any other error stays on the
// server: the client gets a generic message ("not allowed to subscribe to
// this channel"), and Options.Logger gets the error. errors.Is(Deny(msg),
// ErrForbidden) holds.
func Deny(msg string) error { return &denial{msg} }

type denial struct{ msg string }

func (d *denial) Error() string        { return d.msg }
func (d *denial) Is(target error) bool { return target == ErrForbidden }

// reservedPrefix starts the names of the channels the hubs keep for
// themselves. Clients cannot subscribe or publish there, and neither can
// Hub.Publish.
const reservedPrefix = "@live:"

func reserved(channel string) bool { return strings.HasPrefix(channel, reservedPrefix) }

// errReserved refuses a reserved channel.
var errReserved = errors.New("live: channels starting with " + reservedPrefix + " are reserved")
