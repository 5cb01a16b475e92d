package redisbroker_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
	redisbroker "github.com/go-live/live/redis"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
)

// publishKeyed publishes data on channel under key, failing t on an
// error.
func publishKeyed(t testing.TB, b live.Broker, channel, key, data string) live.Position {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	pos, err := b.Publish(live.WithPublishKey(ctx, key), channel, []byte(data))
	if err != nil {
		t.Fatalf("Publish(%q) under key %q: %v", channel, key, err)
	}
	return pos
}

// storedKeys returns the channel's keys sorted set, key by key, and the
// head's field k ("" when absent).
func storedKeys(t testing.TB, c redis.Cmdable, prefix, channel string) (map[string]uint64, string) {
	t.Helper()
	ctx := context.Background()
	zs, err := c.ZRangeWithScores(ctx, prefix+"{"+channel+"}:keys", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	got := make(map[string]uint64, len(zs))
	for _, z := range zs {
		got[z.Member.(string)] = uint64(z.Score)
	}
	k, err := c.HGet(ctx, prefix+"{"+channel+"}:head", "k").Result()
	if err != nil && err != redis.Nil {
		t.Fatal(err)
	}
	return got, k
}

// checkKeyBatch checks that publications under one key in one script call
// are taken once, the later ones returning the first's position, and that
// the keys are honoured in the calls after it.
func checkKeyBatch(t *testing.T, b *redisbroker.Broker) {
	channel := servertest.ChannelName(t)
	w := servertest.Watch(t, b, channel)
	head := w.Ready(t)
	at := func(n uint64) live.Position { return live.Position{Epoch: head.Epoch, Seq: head.Seq + n} }

	pos, errs := redisbroker.PublishCall(b, channel,
		[]string{"k-a", "", "k-a", "k-b", "k-b"},
		[]string{`"a"`, `"plain"`, `"a again"`, `"b"`, `"b again"`})
	if diff := cmp.Diff(make([]error, 5), errs, cmp.Comparer(func(x, y error) bool { return x == y })); diff != "" {
		t.Fatalf("errors of the call (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]live.Position{at(1), at(2), at(1), at(3), at(3)}, pos); diff != "" {
		t.Errorf("positions of one call with keys repeated (-want +got):\n%s", diff)
	}
	// The keys outlive the call, in another call and alone.
	pos, _ = redisbroker.PublishCall(b, channel, []string{"k-b", "k-c", "k-a"}, []string{`"b"`, `"c"`, `"a"`})
	if diff := cmp.Diff([]live.Position{at(3), at(4), at(1)}, pos); diff != "" {
		t.Errorf("positions of the next call (-want +got):\n%s", diff)
	}
	if got := publishKeyed(t, b, channel, "k-c", `"c"`); got != at(4) {
		t.Errorf("k-c alone at %v, want %v", got, at(4))
	}

	want := []live.Message{
		{Channel: channel, Pos: at(1), Data: []byte(`"a"`)},
		{Channel: channel, Pos: at(2), Data: []byte(`"plain"`)},
		{Channel: channel, Pos: at(3), Data: []byte(`"b"`)},
		{Channel: channel, Pos: at(4), Data: []byte(`"c"`)},
	}
	if diff := cmp.Diff(want, w.NextN(t, len(want))); diff != "" {
		t.Errorf("delivered (-want +got):\n%s", diff)
	}
	last := servertest.Publish(t, b, channel, `"last"`)
	if m := w.Next(t); m.Pos != last || last != at(5) {
		t.Errorf("after the keyed ones delivered %v, published at %v; want %v", m.Pos, last, at(5))
	}
	got, err := b.Since(t.Context(), channel, head)
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, live.Message{Channel: channel, Pos: at(5), Data: []byte(`"last"`)})
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
}

func TestPublishKeyBatch(t *testing.T) {
	b, _, _ := newBroker(t, redisURL(t), nil)
	checkKeyBatch(t, b)
}

// A key is honoured while its publication is in the stream: the sorted
// set loses it when HistorySize pushes the publication out, and is gone
// with the last.
func TestPublishKeyTrimmed(t *testing.T) {
	url := redisURL(t)
	b, c, prefix := newBroker(t, url, &redisbroker.Options{HistorySize: 4})
	ctx := t.Context()
	channel := servertest.ChannelName(t)
	keysKey, head := prefix+"{"+channel+"}:keys", prefix+"{"+channel+"}:head"
	check := func(when string, want map[string]uint64, wantK string) {
		t.Helper()
		got, k := storedKeys(t, c, prefix, channel)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: keys (-want +got):\n%s", when, diff)
		}
		if k != wantK {
			t.Errorf("%s: the head's k is %q, want %q", when, k, wantK)
		}
	}

	p1 := publishKeyed(t, b, channel, "k-1", `1`)
	publishKeyed(t, b, channel, "k-2", `2`)
	servertest.Publish(t, b, channel, `3`)
	servertest.Publish(t, b, channel, `4`)
	check("in history", map[string]uint64{"k-1": 1, "k-2": 2}, "1")
	if got := publishKeyed(t, b, channel, "k-1", `"again"`); got != p1 {
		t.Errorf("k-1 again while in history at %v, want %v", got, p1)
	}
	if ttl := c.PTTL(ctx, keysKey).Val(); ttl <= 0 || ttl > 10*time.Minute {
		t.Errorf("PTTL %s = %v, want the default HistoryAge, 10m", keysKey, ttl)
	}
	if slot := c.ClusterKeySlot(ctx, keysKey).Val(); slot != c.ClusterKeySlot(ctx, head).Val() {
		t.Errorf("%s and %s are in different cluster slots", keysKey, head)
	}

	servertest.Publish(t, b, channel, `5`) // pushes out 1
	check("after 1 left history", map[string]uint64{"k-2": 2}, "2")
	if got, want := publishKeyed(t, b, channel, "k-1", `6`), (live.Position{Epoch: p1.Epoch, Seq: 6}); got != want {
		t.Errorf("k-1 after it left history at %v, want %v: published anew", got, want)
	}
	check("after k-1 again, and 2 left history", map[string]uint64{"k-1": 6}, "6")

	for i := range 4 {
		servertest.Publish(t, b, channel, strconv.Itoa(7+i))
	}
	check("after every keyed publication left history", map[string]uint64{}, "")
	if n := c.Exists(ctx, keysKey).Val(); n != 0 {
		t.Errorf("%s exists with no key in history", keysKey)
	}
}

// HistoryAge ends keys with their publications, even before the stream
// is trimmed.
func TestPublishKeyAge(t *testing.T) {
	url := redisURL(t)
	b, c, prefix := newBroker(t, url, &redisbroker.Options{HistoryAge: 50 * time.Millisecond})
	channel := servertest.ChannelName(t)
	first := publishKeyed(t, b, channel, "k-1", `1`)
	if ttl := c.PTTL(t.Context(), prefix+"{"+channel+"}:keys").Val(); ttl <= 0 || ttl > 50*time.Millisecond {
		t.Errorf("PTTL of the keys = %v, want HistoryAge, 50ms", ttl)
	}
	servertest.AwaitGone(t, b, channel, live.Position{Epoch: first.Epoch})
	if got, want := publishKeyed(t, b, channel, "k-1", `2`), (live.Position{Epoch: first.Epoch, Seq: 2}); got != want {
		t.Errorf("k-1 after its publication aged out at %v, want %v: published anew", got, want)
	}
	if got, k := storedKeys(t, c, prefix, channel); !cmp.Equal(map[string]uint64{"k-1": 2}, got) || k != "2" {
		t.Errorf("keys %v, k %q; want k-1 at 2, k 2", got, k)
	}
}

// A key taken in an epoch that was lost is not taken in the next.
func TestPublishKeyNewEpoch(t *testing.T) {
	url := redisURL(t)
	b, c, prefix := newBroker(t, url, nil)
	channel := servertest.ChannelName(t)
	old := publishKeyed(t, b, channel, "k-1", `1`)
	publishKeyed(t, b, channel, "k-2", `2`)
	// The head lost, as to eviction: the stream and keys remain.
	if err := c.Del(t.Context(), prefix+"{"+channel+"}:head").Err(); err != nil {
		t.Fatal(err)
	}
	p2 := publishKeyed(t, b, channel, "k-2", `"2 anew"`)
	if p2.Epoch == old.Epoch || p2.Seq != 1 {
		t.Errorf("k-2 after the head was lost at %v, want Seq 1 of a new epoch (not %s)", p2, old.Epoch)
	}
	if got, want := publishKeyed(t, b, channel, "k-1", `"1 anew"`), (live.Position{Epoch: p2.Epoch, Seq: 2}); got != want {
		t.Errorf("k-1 in the new epoch at %v, want %v", got, want)
	}
	if got, k := storedKeys(t, c, prefix, channel); !cmp.Equal(map[string]uint64{"k-2": 1, "k-1": 2}, got) || k != "1" {
		t.Errorf("keys %v, k %q; want k-2 at 1, k-1 at 2, k 1", got, k)
	}
}

// A keys set left behind by a lost numbering, as a broker of an earlier
// version leaves it when it starts a new epoch, maps no key into the new
// one, even to a publication of the same Seq: the stream entry of a keyed
// publication holds its key.
func TestPublishKeyLeftBehind(t *testing.T) {
	url := redisURL(t)
	b, c, prefix := newBroker(t, url, nil)
	ctx := t.Context()
	channel := servertest.ChannelName(t)
	head, log := prefix+"{"+channel+"}:head", prefix+"{"+channel+"}:log"
	old := publishKeyed(t, b, channel, "k-1", `1`)

	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	_, runID, _ := strings.Cut(info, "run_id:")
	runID, _, _ = strings.Cut(runID, "\r\n")
	if err := c.Del(ctx, head, log).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.HSet(ctx, head, "epoch", "leftbehind22", "seq", 0, "run", runID).Err(); err != nil {
		t.Fatal(err)
	}
	plain := servertest.Publish(t, b, channel, `"plain"`)
	if want := (live.Position{Epoch: "leftbehind22", Seq: old.Seq}); plain != want {
		t.Fatalf("publication in the new epoch at %v, want %v", plain, want)
	}
	if got, want := publishKeyed(t, b, channel, "k-1", `"1 anew"`), (live.Position{Epoch: plain.Epoch, Seq: 2}); got != want {
		t.Errorf("k-1, left behind at Seq %d, then at %v; want %v", old.Seq, got, want)
	}
}
