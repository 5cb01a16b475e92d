package inspect

import (
	"html/template"
	"net/http"

	"github.com/go-live/live/internal/inspectlink"
)

// The types a Snapshot is made of.
type (
	// A Node describes one hub sharing the broker.
	Node = inspectlink.Node
	// A Channel is one of a hub's busiest channels.
	Channel = inspectlink.Channel
	// A Conn is one client connection.
	Conn = inspectlink.Conn
	// An Event is a refusal or an error a hub met.
	Event = inspectlink.Event
)

// page serves the inspector's page: the snapshot now, then its updates
// through the inspector's own live stream.
func (in *Inspector) page(w http.ResponseWriter, r *http.Request) {
	user := r.URL.Query().Get("user")
	data := struct {
		Token, User, Stream string
		Snapshot            Snapshot
	}{token(w, r), user, "live/" + channelOf(user), in.Snapshot(user)}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	if err := pageTmpl.Execute(w, data); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>live inspector</title>
<meta name="inspect-token" content="{{.Token}}">
<style>
body{font:14px system-ui,sans-serif;margin:1.5em}table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}th{background:#f3f3f3}
form{display:inline-block;margin:0 1em .5em 0}#status{color:#666}.err{color:#b00}
</style></head><body>
<h1>live inspector</h1>
<p><strong>This page authenticates nobody: it must be mounted behind the application's admin authentication.</strong></p>
<p id="status">updated <span id="at"></span></p>
<h2>Nodes</h2>
<table id="nodes"><thead><tr><th>node</th><th>started</th><th>last beat</th><th>connections</th><th>sse</th><th>sse-mux</th><th>ws</th><th>poll</th><th>subscriptions</th><th>channels</th><th>published</th><th>pub/s</th></tr></thead><tbody></tbody></table>
<h2>Busiest channels</h2>
<table id="channels"><thead><tr><th>node</th><th>channel</th><th>subscribers</th><th>pub/s</th></tr></thead><tbody></tbody></table>
<h2>User</h2>
<form method="get" action=""><input name="user" value="{{.User}}" placeholder="user id"> <button>Search</button></form>
<table id="user"><thead><tr><th>node</th><th>user</th><th>transport</th><th>remote</th><th>channels</th></tr></thead><tbody></tbody></table>
<h2>Actions</h2>
<form data-action="disconnect"><input name="user" placeholder="user id" value="{{.User}}"> <button>Disconnect user</button></form>
<form data-action="reauthorize"><input name="channel" placeholder="channel (any)"> <input name="user" placeholder="user (any)"> <button>Re-authorize</button></form>
<form data-action="publish"><input name="channel" placeholder="channel"> <input name="data" placeholder='{"test":true}'> <button>Publish test message</button></form>
<p id="result"></p>
<h2>Recent refusals and errors</h2>
<table id="events"><thead><tr><th>node</th><th>at</th><th>kind</th><th>detail</th><th>channel</th><th>remote</th></tr></thead><tbody></tbody></table>
<script>
"use strict";
const token = document.querySelector('meta[name="inspect-token"]').content;
const stream = {{.Stream}};
function rows(id, list) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(...list.map(cells => {
    const tr = document.createElement("tr");
    for (const c of cells) { const td = document.createElement("td"); td.textContent = c == null ? "" : String(c); tr.append(td); }
    return tr;
  }));
}
const short = id => id.length > 40 ? id.slice(0, 40) + "…" : id;
const time = t => t && !t.startsWith("0001") ? new Date(t).toLocaleTimeString() : "";
function render(s) {
  document.getElementById("at").textContent = time(s.at);
  const nodes = s.nodes || [];
  rows("nodes", nodes.map(n => [short(n.id) + (n.self ? " (this one)" : ""), time(n.started), n.self ? "" : time(n.seen), n.conns,
    (n.connsBy||{}).sse, (n.connsBy||{})["sse-mux"], (n.connsBy||{}).ws, (n.connsBy||{}).poll, n.subs, n.channels, n.published, n.detail ? (n.pubRate||0).toFixed(1) : ""]));
  rows("channels", nodes.flatMap(n => (n.busiest||[]).map(c => [short(n.id), c.name, c.subscribers, c.rate.toFixed(1)])));
  rows("user", nodes.flatMap(n => Object.values(n.users||{}).flat().filter(Boolean).map(c => [short(n.id), c.user, c.transport, c.remote, (c.channels||[]).join(", ")])));
  rows("events", nodes.flatMap(n => (n.events||[]).map(e => [short(n.id), time(e.at), e.kind, e.detail, e.channel, e.remote])));
}
render({{.Snapshot}});
const es = new EventSource(stream);
es.onmessage = ev => render(JSON.parse(ev.data));
es.onopen = () => document.getElementById("status").classList.remove("err");
es.onerror = () => document.getElementById("status").classList.add("err");
for (const f of document.querySelectorAll("form[data-action]")) {
  f.addEventListener("submit", async ev => {
    ev.preventDefault();
    const out = document.getElementById("result");
    out.textContent = "…";
    try {
      const res = await fetch(f.dataset.action, {method: "POST", headers: {"X-Inspect-Token": token}, body: new URLSearchParams(new FormData(f))});
      const body = await res.json();
      out.textContent = f.dataset.action + ": " + (res.ok ? "done" : body.error);
      out.className = res.ok ? "" : "err";
    } catch (e) { out.textContent = String(e); out.className = "err"; }
  });
}
</script></body></html>
`))
