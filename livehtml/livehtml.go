package livehtml

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/go-live/live"
)

// A Component renders HTML. It is templ's component interface, so a templ
// component is one as it is; [Template] and [HTML] make others.
type Component interface {
	Render(ctx context.Context, w io.Writer) error
}

// HTML is markup the application trusts, rendered exactly as it is: it is
// not escaped. Use it for HTML that is already escaped, such as a
// response html/template rendered.
type HTML string

// Render writes h to w.
func (h HTML) Render(_ context.Context, w io.Writer) error {
	_, err := io.WriteString(w, string(h))
	return err
}

// Template returns a Component that executes the template of t called
// name ("" for t itself) with data. html/template escapes data as it
// renders it.
func Template(t *template.Template, name string, data any) Component {
	return tmpl{t, name, data}
}

type tmpl struct {
	t    *template.Template
	name string
	data any
}

func (c tmpl) Render(_ context.Context, w io.Writer) error {
	if c.t == nil {
		return errors.New("livehtml: Template with a nil template")
	}
	if c.name == "" {
		return c.t.Execute(w, c.data)
	}
	return c.t.ExecuteTemplate(w, c.name, c.data)
}

// render returns what c renders, "" for a nil c.
func render(ctx context.Context, c Component) (string, error) {
	if c == nil {
		return "", nil
	}
	var b strings.Builder
	if err := c.Render(ctx, &b); err != nil {
		return "", err
	}
	return b.String(), nil
}

// A Message is what a page's stream gets: [Fragment], [TurboStream],
// [PatchElements] or [PatchSignals]. Text renders it as the [live.Text]
// to publish.
type Message interface {
	Text(ctx context.Context) (live.Text, error)
}

// A filler is a Message whose content can be given later: by [Hook] (the
// response), [PresenceText] (the rendered members).
type filler interface {
	Message
	// fill returns the message with c as its content if it has none and
	// takes one; takes reports whether it did.
	fill(c Component) (m Message, takes bool)
}

// Publish renders m and publishes it on channel. A page streaming the
// channel gets it as it is, with the publication's cursor as its id.
func Publish(ctx context.Context, hub *live.Hub, channel string, m Message) (live.Position, error) {
	t, err := m.Text(ctx)
	if err != nil {
		return live.Position{}, fmt.Errorf("livehtml: publish %q: %w", channel, err)
	}
	return hub.Publish(ctx, channel, t)
}

// MustText returns the text of m, rendered now, and panics if m cannot be
// rendered, as template.Must does: for texts made once, when a program
// starts, such as an [live.Options].ResetText.
func MustText(m Message) live.Text {
	t, err := m.Text(context.Background())
	if err != nil {
		panic(err)
	}
	return t
}

// Fragment is HTML sent as one event: named Event, for htmx 2's
// sse-swap="<Event>" or hx-trigger="sse:<Event>" and htmx 4's DOM events,
// or unnamed ("") for htmx 4 to swap into its target (sse-swap="message"
// in htmx 2). The name follows [live.Text]'s rules.
type Fragment struct {
	Event   string
	Content Component
}

// Text renders the fragment.
func (f Fragment) Text(ctx context.Context) (live.Text, error) {
	s, err := render(ctx, f.Content)
	if err != nil {
		return live.Text{}, err
	}
	return live.Text{Event: f.Event, Data: s}, nil
}

func (f Fragment) fill(c Component) (Message, bool) {
	if f.Content == nil {
		f.Content = c
	}
	return f, true
}

// TurboStream is one Turbo Stream action,
//
//	<turbo-stream action="append" target="rows"><template>…</template></turbo-stream>
//
// sent as an unnamed event, the only kind <turbo-stream-source> reads.
// Attributes are escaped; Content goes inside the <template>, as it
// renders. Actions that take no content (remove, refresh) have no
// <template>.
//
// A TurboStream is also a Component, for an HTTP response of type
// text/vnd.turbo-stream.html.
type TurboStream struct {
	// Action is append, prepend, replace, update, remove, before, after
	// or refresh, or a custom action the page registered.
	Action string
	// Target is the id of the element to act on; Targets, a CSS selector
	// instead, acts on every element it matches. One of them is needed
	// but for refresh.
	Target  string
	Targets string
	// Method "morph" makes replace and update, and refresh, morph.
	Method string
	// RequestID is a refresh's request-id: the page whose request it names
	// does not refresh (Turbo skips its own requests).
	RequestID string
	// Content is what the action inserts.
	Content Component
}

// takesNoContent names the Turbo actions that have no <template>.
func (s TurboStream) takesNoContent() bool {
	return s.Action == "remove" || s.Action == "refresh"
}

// Render writes the <turbo-stream> element to w.
func (s TurboStream) Render(ctx context.Context, w io.Writer) error {
	if s.Action == "" {
		return errors.New("livehtml: TurboStream needs an Action")
	}
	if s.Target == "" && s.Targets == "" && s.Action != "refresh" {
		return fmt.Errorf("livehtml: TurboStream %q needs a Target or Targets", s.Action)
	}
	var b strings.Builder
	b.WriteString(`<turbo-stream`)
	attr := func(name, v string) {
		if v != "" {
			b.WriteString(" " + name + `="` + template.HTMLEscapeString(v) + `"`)
		}
	}
	attr("action", s.Action)
	attr("target", s.Target)
	attr("targets", s.Targets)
	attr("method", s.Method)
	attr("request-id", s.RequestID)
	b.WriteString(">")
	if !s.takesNoContent() {
		b.WriteString("<template>")
		if s.Content != nil {
			if err := s.Content.Render(ctx, &b); err != nil {
				return err
			}
		}
		b.WriteString("</template>")
	}
	b.WriteString("</turbo-stream>")
	_, err := io.WriteString(w, b.String())
	return err
}

// Text renders the action as an unnamed event.
func (s TurboStream) Text(ctx context.Context) (live.Text, error) {
	d, err := render(ctx, s)
	if err != nil {
		return live.Text{}, err
	}
	return live.Text{Data: d}, nil
}

func (s TurboStream) fill(c Component) (Message, bool) {
	if s.takesNoContent() {
		return s, false
	}
	if s.Content == nil {
		s.Content = c
	}
	return s, true
}

// Datastar's event types.
const (
	EventPatchElements = "datastar-patch-elements"
	EventPatchSignals  = "datastar-patch-signals"
)

// PatchElements is Datastar's datastar-patch-elements event: the rendered
// Elements patched into the page, by their ids or at Selector, as Mode
// says. Its data lines are those Datastar's Go SDK writes: one
// "elements " line per line of the HTML, which is split at "\r\n" and
// "\r" as well as "\n" (the SDK splits at "\n" only, so that a lone "\r"
// in its input breaks the event).
type PatchElements struct {
	// Selector is a CSS selector for the elements to patch; "" patches
	// the elements that Elements' top-level elements name by id.
	Selector string
	// Mode is outer (the default: morph), inner, replace, prepend,
	// append, before, after or remove.
	Mode string
	// Namespace is html (the default), svg or mathml.
	Namespace string
	// UseViewTransition patches inside a view transition.
	UseViewTransition bool
	// Elements renders the HTML; nil for none (mode remove).
	Elements Component
}

var patchModes = map[string]bool{
	"outer": true, "inner": true, "replace": true, "prepend": true,
	"append": true, "before": true, "after": true, "remove": true,
}

// Text renders the event.
func (p PatchElements) Text(ctx context.Context) (live.Text, error) {
	if p.Mode != "" && !patchModes[p.Mode] {
		return live.Text{}, fmt.Errorf("livehtml: PatchElements mode %q: not outer, inner, replace, prepend, append, before, after or remove", p.Mode)
	}
	switch p.Namespace {
	case "", "html", "svg", "mathml":
	default:
		return live.Text{}, fmt.Errorf("livehtml: PatchElements namespace %q: not html, svg or mathml", p.Namespace)
	}
	if strings.ContainsAny(p.Selector, "\r\n") {
		return live.Text{}, errors.New("livehtml: PatchElements selector holds a line break")
	}
	elements, err := render(ctx, p.Elements)
	if err != nil {
		return live.Text{}, err
	}
	var lines []string
	if p.Selector != "" {
		lines = append(lines, "selector "+p.Selector)
	}
	if p.Mode != "" && p.Mode != "outer" {
		lines = append(lines, "mode "+p.Mode)
	}
	if p.Namespace != "" && p.Namespace != "html" {
		lines = append(lines, "namespace "+p.Namespace)
	}
	if p.UseViewTransition {
		lines = append(lines, "useViewTransition true")
	}
	if elements != "" {
		for _, l := range splitLines(elements) {
			lines = append(lines, "elements "+l)
		}
	}
	if lines == nil {
		return live.Text{}, errors.New("livehtml: PatchElements patches nothing: no Elements, Selector, Mode or view transition")
	}
	return live.Text{Event: EventPatchElements, Data: strings.Join(lines, "\n")}, nil
}

func (p PatchElements) fill(c Component) (Message, bool) {
	if p.Mode == "remove" {
		return p, false
	}
	if p.Elements == nil {
		p.Elements = c
	}
	return p, true
}

// PatchSignals is Datastar's datastar-patch-signals event: Signals merged
// into the page's signals (a member set to null removes that signal), or
// only those missing when OnlyIfMissing is set. Its data lines are those
// Datastar's Go SDK writes.
type PatchSignals struct {
	// Signals is a JSON object: a json.RawMessage or []byte of JSON as it
	// is, a Component whose output is JSON, or any other value, which is
	// encoded with encoding/json (as the SDK's MarshalAndPatchSignals
	// does).
	Signals any
	// OnlyIfMissing patches only the signals the page does not have.
	OnlyIfMissing bool
}

// Text renders the event.
func (p PatchSignals) Text(ctx context.Context) (live.Text, error) {
	var raw []byte
	switch v := p.Signals.(type) {
	case json.RawMessage:
		raw = v
	case []byte:
		raw = v
	case Component:
		s, err := render(ctx, v)
		if err != nil {
			return live.Text{}, err
		}
		raw = []byte(s)
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return live.Text{}, fmt.Errorf("livehtml: PatchSignals: %w", err)
		}
		raw = b
	}
	if !json.Valid(raw) {
		return live.Text{}, errors.New("livehtml: PatchSignals: signals are not JSON")
	}
	if t := bytes.TrimLeft(raw, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return live.Text{}, errors.New("livehtml: PatchSignals: signals are not a JSON object")
	}
	var lines []string
	if p.OnlyIfMissing {
		lines = append(lines, "onlyIfMissing true")
	}
	for _, l := range splitLines(string(raw)) {
		lines = append(lines, "signals "+l)
	}
	return live.Text{Event: EventPatchSignals, Data: strings.Join(lines, "\n")}, nil
}

func (p PatchSignals) fill(c Component) (Message, bool) {
	if p.Signals == nil {
		p.Signals = c
	}
	return p, true
}

// splitLines splits s at each line break the event stream format knows:
// "\r\n", "\r" or "\n".
func splitLines(s string) []string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	return strings.Split(s, "\n")
}

// Hook returns a function for [live.HookOptions].Event that publishes a
// handler's own HTML response on channel(r) ("" publishes nothing), so
// that the other pages get what the author got: the new row a POST
// answers, the edited item a PATCH does. m says how: a [Fragment] with an
// event name (htmx 2's sse-swap), a [TurboStream], a [PatchElements], or a
// [PatchSignals] for a JSON response; the response becomes its content
// when it has none. A response with an empty body publishes nothing,
// unless m takes no content (a Turbo remove or refresh, a Datastar
// remove).
//
// The author's page swaps the response in itself; to keep its stream
// from getting the change a second time, set [live.HookOptions].ToOthers
// and name the page's stream as its writes name it:
//
//	id := live.NewConnectionID() // per page view
//	// <body hx-headers='{"Live-Connection":"{{.ID}}"}'>
//	// <div hx-ext="sse" sse-connect="/live/feed?cursor={{.Cursor}}&connection={{.ID}}">
//
//	mux.Handle("POST /rows", hub.Hook(live.HookOptions{
//		Event:    livehtml.Hook(func(*http.Request) string { return "feed" }, livehtml.Fragment{Event: "row"}),
//		ToOthers: true,
//	})(addRow))
//
// A message that cannot be rendered is logged by the Hub as a publication
// that failed, and counted.
func Hook(channel func(r *http.Request) string, m Message) func(r *http.Request, status int, body []byte) []live.Event {
	return func(r *http.Request, status int, body []byte) []live.Event {
		ch := channel(r)
		if ch == "" {
			return nil
		}
		msg := m
		if f, ok := m.(filler); ok {
			var takes bool
			msg, takes = f.fill(HTML(body))
			if takes && len(body) == 0 {
				return nil
			}
		}
		t, err := msg.Text(r.Context())
		if err != nil {
			return []live.Event{{Channel: ch, Data: failed{err}}}
		}
		return []live.Event{{Channel: ch, Data: t}}
	}
}

// failed is the data of an event that could not be rendered: the Hub
// cannot encode it, and logs and counts the error.
type failed struct{ err error }

func (f failed) MarshalJSON() ([]byte, error) { return nil, f.err }

// ResetText returns a function for [live.Options].ResetText that sends
// m, rendered now, after the "reset" event of every plain channel's
// one-channel SSE streams: a [TurboStream] refresh, a Datastar patch that
// makes the page fetch again, a [Fragment] with an event name an htmx
// page triggers on. It panics if m cannot be rendered, as template.Must
// does. For pages of several kinds, write a function that returns
// [MustText] values by channel.
func ResetText(m Message) func(channel string) live.Text {
	t := MustText(m)
	return func(string) live.Text { return t }
}

// Presence is what [PresenceText]'s template renders.
type Presence struct {
	Channel string
	// Members are the users watching, by user; nil on a
	// live.PresenceCount channel.
	Members []Member
	// Count is how many are watching: users, plus each anonymous
	// connection.
	Count int
}

// Member is one user watching, as [Presence] has it.
type Member struct {
	User string
	// Info is the user's public record (live.Identity's Info), decoded
	// from JSON: a map for an object.
	Info any
	// Conns counts the user's connections: tabs, devices.
	Conns int
}

// PresenceText returns a function for [live.Options].PresenceText that
// renders a presence channel's members with the template of t called
// name ("" for t itself), given a [Presence], and sends the result as m's
// content on the channel's one-channel SSE streams, after each change:
//
//	{{define "watching"}}<span id="watching">{{.Count}} watching</span>{{end}}
//
//	PresenceText: livehtml.PresenceText(page, "watching", livehtml.Fragment{Event: "watching"})
//	// htmx 2: <span sse-swap="watching">…</span>
//
// or a TurboStream{Action: "replace", Target: "watching"}, or a Datastar
// PatchElements{}. A render that fails sends nothing and is logged
// through slog.Default().
func PresenceText(t *template.Template, name string, m Message) func(channel string, members []live.Member, count int) live.Text {
	return func(channel string, members []live.Member, count int) live.Text {
		p := Presence{Channel: channel, Count: count}
		if members != nil {
			p.Members = make([]Member, len(members))
			for i, mb := range members {
				p.Members[i] = Member{User: mb.User, Conns: mb.Conns}
				if len(mb.Info) > 0 {
					_ = json.Unmarshal(mb.Info, &p.Members[i].Info)
				}
			}
		}
		msg := m
		if f, ok := m.(filler); ok {
			msg, _ = f.fill(Template(t, name, p))
		}
		text, err := msg.Text(context.Background())
		if err != nil {
			slog.Error("livehtml: presence not rendered", "channel", channel, "err", err)
			return live.Text{}
		}
		return text
	}
}
