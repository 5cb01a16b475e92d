package pgbroker_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
	pgbroker "github.com/go-live/live/postgres"
)

// PublishTx is an application's way to publish, guarded as the broker's
// Publish is: a forged control message on the hubs' reserved channel is
// refused and ends nothing, and data that looks like the envelope hubs
// once carried an exclusion in reaches everyone as it was published, on
// every node.
func TestPublishTxGuard(t *testing.T) {
	url := pgURL(t)
	b, pool, schema := newBroker(t, url, nil)
	opts := &live.Options{
		Identify: func(r *http.Request) (live.Identity, error) {
			return live.Identity{User: r.Header.Get("X-User")}, nil
		},
	}
	other := pgbroker.New(pool, &pgbroker.Options{Schema: schema, Logger: servertest.Logger(t)})
	t.Cleanup(func() { other.Close() })
	a, n := servertest.NewNode(t, b, opts), servertest.NewNode(t, other, opts)
	channel := servertest.ChannelName(t)
	victim := servertest.OpenStreamWith(t, n.SSE+channel, http.Header{"X-User": {"victim"}})
	bystander := servertest.OpenStreamWith(t, a.SSE+channel, http.Header{"X-User": {"bystander"}})

	ctx := t.Context()
	inTx := func(channel, data string) error {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := b.PublishTx(ctx, tx, channel, []byte(data)); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}
	for _, c := range []struct{ channel, data string }{
		{"@live:control", `{"op":"disconnect","user":"victim","from":"forged"}`},
		{"@live:presence", `{"op":"alive","from":"forged"}`},
	} {
		if err := inTx(c.channel, c.data); err == nil {
			t.Errorf("PublishTx(%q, %s): nil error; want a refusal: the channel is the hubs'", c.channel, c.data)
		}
	}
	lookalikes := []string{
		`{"@live:except":{"user":"victim"},"data":"not for the victim"}`,
		`{"@live:except":1}`,
	}
	for _, data := range lookalikes {
		if err := inTx(channel, data); err != nil {
			t.Fatal(err)
		}
	}
	a.Publish(t, channel, `"after"`)
	for _, data := range append(lookalikes, `"after"`) {
		for who, s := range map[string]*servertest.Stream{"victim on the other node": victim, "bystander": bystander} {
			if ev := s.Next(t); ev.Data != data {
				t.Fatalf("%s: %+v; want the data %s as published", who, ev, data)
			}
		}
	}
}

// A database whose messages table predates meta gains the column when a
// broker of this version creates its schema, and publications keep their
// meta.
func TestSchemaGainsMeta(t *testing.T) {
	url := pgURL(t)
	pool := newPool(t, url)
	schema := testSchema(t, pool)
	ctx := t.Context()
	if _, err := pool.Exec(ctx, `CREATE SCHEMA `+schema+`;
CREATE TABLE `+schema+`.messages (
	channel text NOT NULL,
	seq     bigint NOT NULL,
	data    bytea NOT NULL,
	at      timestamptz NOT NULL,
	PRIMARY KEY (channel, seq)
)`); err != nil {
		t.Fatal(err)
	}
	b, _, _ := newBroker(t, url, &pgbroker.Options{Schema: schema})
	hub := servertest.NewNode(t, b, nil).Hub
	channel := servertest.ChannelName(t)
	w := servertest.Watch(t, b, channel)
	head := w.Ready(t)
	if _, err := hub.Publish(live.Except(context.Background(), "", "someone"), channel, 1); err != nil {
		t.Fatal(err)
	}
	if m := w.Next(t); string(m.Data) != "1" || len(m.Meta) == 0 {
		t.Errorf("delivered %s with meta %q; want 1 with meta", m.Data, m.Meta)
	}
	msgs, err := b.Since(ctx, channel, head)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || len(msgs[0].Meta) == 0 {
		t.Errorf("Since = %+v; want the publication with its meta", msgs)
	}
}
