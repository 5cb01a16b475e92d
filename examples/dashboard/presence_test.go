package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-live/live"
	"github.com/go-live/live/internal/servertest"
	redisbroker "github.com/go-live/live/redis"
)

// TestKilledNodeLeavesPresence runs a dashboard as a process of its own on
// Redis, with a visitor on its board, and kills it (SIGKILL: no goodbye).
// A node in this process, on the same Redis, shows the visitor until then
// and drops them once the dead node is overdue: within 4/3 of the default
// PresenceTimeout (15 s), 20 s; the test logs how long it took.
func TestKilledNodeLeavesPresence(t *testing.T) {
	url, prefix := redisSetup(t)
	bin := filepath.Join(t.TempDir(), "dashboard")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	doomed := servertest.StartProcess(t, servertest.ProcessOptions{
		Command: func(port int) *exec.Cmd {
			return exec.Command(bin, "-addr", fmt.Sprintf("127.0.0.1:%d", port), "-redis", url, "-prefix", prefix)
		},
		Ready: func(ctx context.Context, port int) error {
			req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://127.0.0.1:%d/api/metrics", port), nil)
			res, err := http.DefaultClient.Do(req)
			if err == nil {
				res.Body.Close()
			}
			return err
		},
	})
	b, err := redisbroker.Open(url, &redisbroker.Options{Prefix: prefix, HistoryAge: -1})
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, b)
	survivor := newNode(t, appOptions{Broker: b})

	const visitor = "killedvisitor234"
	onBoard(t, fmt.Sprintf("ws://127.0.0.1:%d/ws", doomed.Port), visitor)
	watcher := onBoard(t, "ws"+strings.TrimPrefix(survivor.url, "http")+"/ws", "watchervisitor23")
	members := map[string]bool{}
	waitMembers := func(want bool) {
		t.Helper()
		for members[visitor] != want {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			_, data, err := watcher.Read(ctx)
			cancel()
			if err != nil {
				t.Fatalf("watching the board on the survivor: %v (members %v)", err, members)
			}
			var f struct {
				Type    string        `json:"type"`
				Members []live.Member `json:"members"`
				Join    []live.Member `json:"join"`
				Leave   []string      `json:"leave"`
			}
			if json.Unmarshal(data, &f) != nil || f.Type != "presence" {
				continue
			}
			if f.Members != nil {
				clear(members)
			}
			for _, m := range append(f.Members, f.Join...) {
				members[m.User] = true
			}
			for _, u := range f.Leave {
				delete(members, u)
			}
		}
	}
	waitMembers(true)

	doomed.Kill()
	start := time.Now()
	waitMembers(false)
	took := time.Since(start)
	t.Logf("the killed node's visitor left the survivor's board after %v", took.Round(100*time.Millisecond))
	if took > 30*time.Second {
		t.Errorf("the killed node's members stayed %v; the bound is 20 s", took)
	}
}

// onBoard opens a WebSocket as visitor, subscribed to the board.
func onBoard(t *testing.T, url, visitor string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Cookie": {"visitor=" + visitor}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	c.SetReadLimit(-1)
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","channel":"board"}`)); err != nil {
		t.Fatal(err)
	}
	return c
}
