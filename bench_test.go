package live_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-live/live"
	"github.com/go-live/live/observe"
)

// BenchmarkFanout publishes to n in-process SSE subscribers, served by
// the hub's writers as every stream is, whose connections take what they
// are written at once: the cost of the hub itself (encode once, queue,
// the writers' turns), without the network. One op is one publication.
func BenchmarkFanout(b *testing.B) { benchmarkFanout(b, nil, 1, 1000, 10000) }

// benchmarkFanout is BenchmarkFanout on a hub observed by obs.
func benchmarkFanout(b *testing.B, obs *observe.Hooks, subscribers ...int) {
	for _, n := range subscribers {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			hub := live.NewHub(&live.Options{Heartbeat: time.Hour, Observe: obs})
			b.Cleanup(func() { hub.Close(context.Background()) }) // after the sink's cleanup
			sink := hub.AttachSink(b, "bench", n)
			value := map[string]any{"users": 42, "load": 0.7, "region": "eu-west"}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			// Publish in rounds that fit the subscribers' queues: a publisher
			// that outruns its subscribers by more than QueueMessages has them
			// disconnected as slow, which is not what this measures.
			const round = 64
			for done := 0; done < b.N; {
				k := min(round, b.N-done)
				sink.Expect(int64(k) * int64(n))
				for range k {
					if _, err := hub.Publish(ctx, "bench", value); err != nil {
						b.Fatal(err)
					}
				}
				sink.Wait()
				done += k
			}
			b.StopTimer()
			deliveries := float64(b.N) * float64(n)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/deliveries, "ns/delivery")
		})
	}
}

// BenchmarkFanoutText compares a text publication (live.Text, an HTML
// fragment) with a JSON one of about its size, each published to 1000
// in-process SSE subscribers as BenchmarkFanout does: a one-channel
// stream sends the text as it is, encoded once per publication, so a
// delivery costs what a JSON one does.
func BenchmarkFanoutText(b *testing.B) {
	const n = 1000
	html := `<tr id="order-321"><td>eu-west</td><td>98765.40</td><td>1234</td></tr>`
	for _, c := range []struct {
		name string
		v    any
	}{
		{"json", map[string]any{"id": 321, "region": "eu-west", "revenue": 98765.4, "users": 1234}},
		{"text", live.Text{Event: "row", Data: html}},
		{"text-lines", live.Text{Data: strings.ReplaceAll(html, "><", ">\n<")}},
	} {
		b.Run(c.name, func(b *testing.B) {
			hub := live.NewHub(&live.Options{Heartbeat: time.Hour})
			b.Cleanup(func() { hub.Close(context.Background()) })
			sink := hub.AttachSink(b, "bench", n)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			const round = 64
			for done := 0; done < b.N; {
				k := min(round, b.N-done)
				sink.Expect(int64(k) * n)
				for range k {
					if _, err := hub.Publish(ctx, "bench", c.v); err != nil {
						b.Fatal(err)
					}
				}
				sink.Wait()
				done += k
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/(float64(b.N)*n), "ns/delivery")
		})
	}
}

// BenchmarkSSE publishes to subscribers on real SSE connections over
// loopback, client and server in this process.
func BenchmarkSSE(b *testing.B) {
	benchmarkStreams(b, func(b *testing.B, s *testServer) <-chan bool {
		stream := openSSE(b, s.srv.URL+"/live/bench", nil)
		data := make(chan bool)
		go func() {
			defer close(data)
			for ev := range stream.events {
				if ev.Data != "" && !sendUntil(data, stream.ctx.Done()) {
					return
				}
			}
		}()
		return data
	})
}

// BenchmarkWebSocket publishes to subscribers on real WebSocket
// connections over loopback, client and server in this process.
func BenchmarkWebSocket(b *testing.B) {
	benchmarkStreams(b, func(b *testing.B, s *testServer) <-chan bool {
		ws := dialWS(b, s.wsURL(), nil)
		ws.subscribe(b, "bench")
		data := make(chan bool)
		go func() {
			defer close(data)
			for f := range ws.frames {
				if f.Type == "data" && !sendUntil(data, ws.quit) {
					return
				}
			}
		}()
		return data
	})
}

// BenchmarkWebSocketWrite is the WebSocket write path as clients get it:
// publications fanned out by the hub's writers to n real WebSocket
// connections over loopback, read by clients that only count frames, so
// what it measures is the server's work (and the kernel's). One op is one
// publication; allocs/op are the whole process's per publication.
func BenchmarkWebSocketWrite(b *testing.B) {
	for _, tc := range []struct {
		n     int
		flate bool
	}{{1, false}, {100, false}, {1000, false}, {100, true}} {
		name := fmt.Sprintf("subscribers=%d", tc.n)
		if tc.flate {
			name += "/compressed"
		}
		b.Run(name, func(b *testing.B) {
			s := newTestServer(b, &live.Options{Heartbeat: time.Hour, MaxConnsPerIP: -1, Compression: tc.flate})
			counters := make([]*frameCounter, tc.n)
			for i := range counters {
				counters[i] = dialCounter(b, s, "bench", tc.flate)
			}
			var value any = map[string]any{"users": 42, "load": 0.7, "region": "eu-west"}
			if tc.flate {
				// Large enough to be compressed (from 512 bytes): a chart's
				// series of 100 points, about 2 KiB.
				series := make([]map[string]int, 100)
				for i := range series {
					series[i] = map[string]int{"t": 1767225600 + i, "v": i * 37 % 1000}
				}
				value = map[string]any{"series": series}
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			const round = 64 // within the subscribers' queues, as in BenchmarkFanout
			for done := 0; done < b.N; {
				k := min(round, b.N-done)
				for _, c := range counters {
					c.want.Add(int64(k))
				}
				for range k {
					if _, err := s.hub.Publish(ctx, "bench", value); err != nil {
						b.Fatal(err)
					}
				}
				for _, c := range counters {
					select {
					case <-c.reached:
					case <-c.done:
						b.Fatalf("a connection ended after %d frames", c.got.Load())
					}
				}
				done += k
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/(float64(b.N)*float64(tc.n)), "ns/delivery")
		})
	}
}

// frameCounter is a WebSocket client that counts the messages it gets
// without decoding them, and signals reached when it has as many as want.
type frameCounter struct {
	got, want atomic.Int64
	reached   chan struct{}
	done      chan struct{}
}

// dialCounter opens a WebSocket to s, subscribes it to channel and
// returns once the subscription is acknowledged.
func dialCounter(b *testing.B, s *testServer, channel string, flate bool) *frameCounter {
	b.Helper()
	ext := ""
	if flate {
		ext = "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; server_no_context_takeover\r\n"
	}
	nc, _, br := dialRawWS(b, s, ext, 64<<10)
	nc.Write(clientFrame(0x1, fmt.Appendf(nil, `{"type":"subscribe","channel":%q}`, channel)))
	c := &frameCounter{reached: make(chan struct{}, 1), done: make(chan struct{})}
	c.want.Store(1) // the acknowledgement
	go func() {
		defer close(c.done)
		for {
			_, n, err := readFrameHeader(br)
			if err != nil {
				return
			}
			if _, err := br.Discard(n); err != nil {
				return
			}
			if c.got.Add(1) == c.want.Load() {
				c.reached <- struct{}{}
			}
		}
	}()
	b.Cleanup(func() {
		nc.Close()
		<-c.done
	})
	select {
	case <-c.reached:
	case <-c.done:
		b.Fatal("the connection ended before its subscription was acknowledged")
	}
	return c
}

// sendUntil signals one publication on c, unless quit closes first.
func sendUntil(c chan<- bool, quit <-chan struct{}) bool {
	select {
	case c <- true:
		return true
	case <-quit:
		return false
	}
}

// benchmarkStreams publishes b.N times to n subscribers, each opened by
// subscribe, whose channel signals every publication it receives.
func benchmarkStreams(b *testing.B, subscribe func(*testing.B, *testServer) <-chan bool) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			s := newTestServer(b, &live.Options{Heartbeat: time.Hour, MaxConnsPerIP: -1})
			done := make(chan int, n)
			for range n {
				data := subscribe(b, s)
				go func() {
					got := 0
					for range data {
						if got++; got == b.N {
							break
						}
					}
					done <- got
				}()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				s.publish(b, "bench", map[string]int{"i": i})
			}
			for range n {
				if got := <-done; got != b.N {
					b.Fatalf("a subscriber got %d of %d", got, b.N)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/(float64(b.N)*float64(n)), "ns/delivery")
		})
	}
}

// BenchmarkMerge applies each merge strategy to a dashboard-sized value.
func BenchmarkMerge(b *testing.B) {
	current := json.RawMessage(`{"activeUsers":1234,"revenue":98765.4,"orders":321,"region":"eu-west","series":[1,2,3,4,5,6,7,8],"meta":{"updated":"2026-01-01T00:00:00Z","source":"db"}}`)
	update := json.RawMessage(`{"activeUsers":1240,"meta":{"updated":"2026-01-01T00:00:01Z"}}`)
	list := json.RawMessage(`[{"id":"a","n":1},{"id":"b","n":2},{"id":"c","n":3},{"id":"d","n":4}]`)
	for _, tc := range []struct {
		name    string
		merge   live.Merge
		current json.RawMessage
		update  json.RawMessage
	}{
		{"replace", live.MergeReplace, current, update},
		{"shallow", live.MergeShallow, current, update},
		{"patch", live.MergePatch, current, update},
		{"list-update", live.MergeList("id"), list, json.RawMessage(`{"type":"update","item":{"id":"c","n":30}}`)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tc.merge(tc.current, tc.update); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("diff", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := live.Diff(current, update); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("apply-delta", func(b *testing.B) {
		d := live.Delta{Version: 8, Changes: []live.Change{{Op: "update", Path: "meta.updated", Value: json.RawMessage(`"x"`)}, {Op: "update", Path: "activeUsers", Value: json.RawMessage(`1`)}}}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := live.ApplyDelta(current, 7, d); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkLongPoll measures polls over loopback, client in-process: an
// idle one (cursors current, nothing waiting, no hold), and one that
// finds a publication waiting. One op is one poll.
func BenchmarkLongPoll(b *testing.B) {
	s := newTestServer(b, &live.Options{Heartbeat: time.Hour})
	head := s.publish(b, "p", 0).String()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	poll := func(b *testing.B, cursor string) {
		resp, err := client.Get(s.srv.URL + "/api/live?channels=p&poll=0&cursor.p=" + cursor)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	b.Run("idle", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			poll(b, head)
		}
	})
	b.Run("one waiting", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			pos := s.publish(b, "p", 1)
			poll(b, live.Position{Epoch: pos.Epoch, Seq: pos.Seq - 1}.String())
		}
	})
}

// BenchmarkCheckPublish is what the guard costs a broker's Publish for an
// application's 100-byte publication, which it validates and compacts (a
// hub's it hands over as it is).
func BenchmarkCheckPublish(b *testing.B) {
	data := []byte(`{"id":"0f8fad5b-d9cb-469f-a165-70867728950e","title":"write the report","done":false,"order":12}`)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := live.CheckPublish(ctx, "todos", data); err != nil {
			b.Fatal(err)
		}
	}
}
