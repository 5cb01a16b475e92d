package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/go-live/live"
)

// txKey keys a request's transaction in its context.
type txKey struct{}

// reqTx is a request's transaction and what became of it.
type reqTx struct {
	tx   *sql.Tx
	done bool // committed or rolled back
}

// TxFromContext returns the transaction [Outbox.Hook] began for the
// request whose context ctx is: the handler does its writes in it.
func TxFromContext(ctx context.Context) (*sql.Tx, bool) {
	t, ok := ctx.Value(txKey{}).(*reqTx)
	if !ok || t.done {
		return nil, false
	}
	return t.tx, true
}

// ErrNoTx is returned by a HookOptions.Publish of the outbox's called for a
// request that [Outbox.Hook]'s middleware did not begin a transaction for.
var ErrNoTx = errors.New("outbox: no transaction in the request's context (use Outbox.Hook)")

// Hook returns [live.Hub.Hook] middleware whose publications go through
// the outbox, in the handler's own transaction, so that a change and its
// publication commit together or not at all, without the handler doing
// anything but its writes.
//
// For a mutating request (not GET, HEAD, OPTIONS or TRACE) it begins a
// transaction with txOpts (nil for the driver's default), which the handler
// finds with [TxFromContext] and does its writes in. When the handler
// answers with a 2xx status, the hook records its events in the
// transaction and commits it, before the response is sent: if either
// fails, the client gets 500 and a JSON body {"error":"publish_failed",…}
// instead, and nothing of the request is committed. (A handler that
// flushes, hijacks or writes more than opts.MaxBody has sent its response
// before: a failure then is only logged.) After any other status, or a
// panic, the transaction is rolled back. The transaction is not ended
// when the client goes away; the handler's own statements still follow
// the request's context.
//
// opts is as for [live.Hub.Hook], with Publish set by Hook (and ToOthers
// ignored). A transaction that cannot begin is answered with 503.
func (o *Outbox) Hook(hub *live.Hub, opts live.HookOptions, txOpts *sql.TxOptions) func(http.Handler) http.Handler {
	logger := slog.Default()
	opts.Publish = o.hookPublish
	hook := hub.Hook(opts)
	return func(next http.Handler) http.Handler {
		inner := hook(next)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.Method {
			case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
				next.ServeHTTP(w, r)
				return
			}
			tx, err := o.db.BeginTx(context.WithoutCancel(r.Context()), txOpts)
			if err != nil {
				logger.Error("outbox: begin a request's transaction", "method", r.Method, "path", r.URL.Path, "err", err)
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusServiceUnavailable)
				json.NewEncoder(w).Encode(map[string]string{"error": "unavailable", "message": "the database is unavailable"})
				return
			}
			st := &reqTx{tx: tx}
			sw := &statusWriter{ResponseWriter: w}
			defer func() {
				if !st.done {
					st.done = true
					tx.Rollback()
				}
			}()
			inner.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), txKey{}, st)))
			if st.done {
				return
			}
			// The hook did not publish: a status other than 2xx (roll
			// back), or a 2xx it could not hold (commit what was answered).
			st.done = true
			if sw.status >= 200 && sw.status <= 299 {
				if err := tx.Commit(); err != nil {
					logger.Error("outbox: commit a request's transaction after its response", "method", r.Method, "path", r.URL.Path, "err", err)
				}
				return
			}
			tx.Rollback()
		})
	}
}

// hookPublish records a request's events in its transaction and commits.
func (o *Outbox) hookPublish(r *http.Request, events []live.Event) error {
	st, ok := r.Context().Value(txKey{}).(*reqTx)
	if !ok || st.done {
		return ErrNoTx
	}
	st.done = true
	ctx := context.WithoutCancel(r.Context())
	for _, ev := range events {
		if _, err := o.Publish(ctx, st.tx, ev.Channel, ev.Data); err != nil {
			st.tx.Rollback()
			return err
		}
	}
	if err := st.tx.Commit(); err != nil {
		return err
	}
	o.Wake()
	return nil
}

// statusWriter records the status a response was sent with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the writer underneath.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
