package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"

	"github.com/centrifugal/centrifuge"
	"github.com/go-live/live"
	"github.com/olahol/melody"
	r3sse "github.com/r3labs/sse/v2"
	gosse "github.com/tmaxmax/go-sse"
)

// A target is the server under load: live's Hub, or a peer library set up
// as its documentation shows, serving the load channel on the same
// machine with the same publications.
type target interface {
	handler() http.Handler
	publish(data []byte) error
	// publishTo publishes on a channel of the many-channel scenario.
	publishTo(channel string, data []byte) error
	// counts returns what the server reports: subscribers now, and, for
	// live, frames delivered, socket writes, resets and slow clients.
	counts() targetCounts
	close(ctx context.Context)
}

type targetCounts struct {
	subscriptions, channels, delivered, writes, published, resets, slow int64
}

// Where each server's subscribers connect, and how.
var peerRoutes = map[string]struct{ path, transport string }{
	"r3labs":     {"/events?stream=" + loadChannel, "sse"},
	"gosse":      {"/events", "sse"},
	"melody":     {"/ws", "ws"},
	"centrifuge": {"/connection/websocket", "ws"},
}

// newPeer sets up a peer library by name; many sets it up for the
// many-channel scenario, a channel per subscriber, where it can.
func newPeer(name string, many bool) (target, error) {
	switch name {
	case "r3labs":
		s := r3sse.New()
		s.AutoReplay = false
		if many {
			// A stream per subscriber, made when it connects, as the
			// library offers for streams not known in advance.
			s.AutoStream = true
		} else {
			s.CreateStream(loadChannel)
		}
		pubTo := func(ch string, b []byte) error {
			s.Publish(ch, &r3sse.Event{Data: append([]byte(nil), b...)})
			return nil
		}
		return &streamPeer{h: s, pub: func(b []byte) error { return pubTo(loadChannel, b) }, pubTo: pubTo, stop: s.Close}, nil
	case "gosse":
		s := &gosse.Server{OnSession: func(_ http.ResponseWriter, r *http.Request) ([]string, bool) {
			if topics := r.URL.Query()["topic"]; len(topics) > 0 {
				return topics, true
			}
			return []string{loadChannel}, true
		}}
		pubTo := func(ch string, b []byte) error {
			m := &gosse.Message{}
			m.AppendData(string(b))
			return s.Publish(m, ch)
		}
		return &streamPeer{h: s, pub: func(b []byte) error { return pubTo(loadChannel, b) }, pubTo: pubTo,
			stop: func() { s.Shutdown(context.Background()) }}, nil
	case "melody":
		m := melody.New()
		m.Config.MessageBufferSize = 4096 // live queues 4096 frames per client
		return &streamPeer{h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			m.HandleRequest(w, r)
		}), pub: func(b []byte) error { return m.Broadcast(append([]byte(nil), b...)) }, stop: func() { m.Close() }}, nil
	case "centrifuge":
		return newCentrifuge()
	}
	return nil, fmt.Errorf("unknown server %q: live, r3labs, gosse, melody or centrifuge", name)
}

// streamPeer is a peer whose handler runs as long as a subscriber stays:
// the handlers running are its subscribers.
type streamPeer struct {
	h      http.Handler
	pub    func([]byte) error
	pubTo  func(string, []byte) error // nil for a peer without channels
	stop   func()
	active atomic.Int64
}

func (p *streamPeer) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.active.Add(1)
		defer p.active.Add(-1)
		p.h.ServeHTTP(w, r)
	})
}

func (p *streamPeer) publish(b []byte) error { return p.pub(b) }
func (p *streamPeer) counts() targetCounts   { return targetCounts{subscriptions: p.active.Load()} }
func (p *streamPeer) close(context.Context)  { p.stop() }

func (p *streamPeer) publishTo(ch string, b []byte) error {
	if p.pubTo == nil {
		return errNoChannels
	}
	return p.pubTo(ch, b)
}

// errNoChannels is the answer of a peer that has no channels to publish on.
var errNoChannels = errors.New("this server has no channels")

// centrifugePeer is Centrifuge with its in-memory broker: clients connect
// anonymously and may subscribe to the load channel.
type centrifugePeer struct {
	node *centrifuge.Node
	subs atomic.Int64
}

func newCentrifuge() (target, error) {
	node, err := centrifuge.New(centrifuge.Config{})
	if err != nil {
		return nil, err
	}
	p := &centrifugePeer{node: node}
	node.OnConnecting(func(context.Context, centrifuge.ConnectEvent) (centrifuge.ConnectReply, error) {
		return centrifuge.ConnectReply{Credentials: &centrifuge.Credentials{}}, nil
	})
	node.OnConnect(func(c *centrifuge.Client) {
		c.OnSubscribe(func(_ centrifuge.SubscribeEvent, cb centrifuge.SubscribeCallback) {
			p.subs.Add(1)
			cb(centrifuge.SubscribeReply{}, nil)
		})
		c.OnUnsubscribe(func(centrifuge.UnsubscribeEvent) { p.subs.Add(-1) })
	})
	if err := node.Run(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *centrifugePeer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/connection/websocket", centrifuge.NewWebsocketHandler(p.node, centrifuge.WebsocketConfig{}))
	return mux
}

func (p *centrifugePeer) publish(b []byte) error { return p.publishTo(loadChannel, b) }

func (p *centrifugePeer) publishTo(ch string, b []byte) error {
	_, err := p.node.Publish(ch, append([]byte(nil), b...))
	return err
}

func (p *centrifugePeer) counts() targetCounts { return targetCounts{subscriptions: p.subs.Load()} }

func (p *centrifugePeer) close(ctx context.Context) { p.node.Shutdown(ctx) }

// hubTarget is live's Hub.
type hubTarget struct {
	hub *live.Hub
	mux http.Handler
}

func (t *hubTarget) handler() http.Handler { return t.mux }

func (t *hubTarget) publish(b []byte) error { return t.publishTo(loadChannel, b) }

func (t *hubTarget) publishTo(ch string, b []byte) error {
	_, err := t.hub.Publish(context.Background(), ch, json.RawMessage(b))
	return err
}

func (t *hubTarget) counts() targetCounts {
	hs := t.hub.Stats()
	return targetCounts{subscriptions: hs.Subscriptions, channels: hs.Channels, delivered: hs.Delivered, writes: hs.Writes,
		published: hs.Published, resets: hs.Resets, slow: hs.SlowClients}
}

func (t *hubTarget) close(ctx context.Context) { t.hub.Close(ctx) }
