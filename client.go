package live

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"net/http"
	"strings"
	"time"
)

//go:embed client/dist/live.js client/live.d.ts client/react.js client/react.d.ts
var clientFiles embed.FS

// ClientHandler returns a handler that serves the browser client, live.js:
// a dependency-free ES module that multiplexes channels over one
// WebSocket, reconnects with backoff, resumes by cursor, applies the merge
// strategies of this package and makes list mutations optimistic. It is
// served as one file, built from client/live.js and the modules of
// client/src, so one route is all a page needs. Mount it and import it
// from the page:
//
//	mux.Handle("GET /live.js", live.ClientHandler())
//
//	<script type="module">
//	  import { createLive } from "/live.js";
//	  const live = createLive({ url: "/ws" });
//	</script>
//
// A request whose path ends in ".d.ts" gets the module's TypeScript
// declarations instead, so mounting the handler at "GET /live.d.ts" too
// serves them. A path ending in "react.js" gets react.js, the React
// bindings (LiveProvider, useLiveData, …), which import "./live.js"
// beside it and "react" and "@tanstack/react-query" by name (for a page
// with an import map, or a bundler); "react.d.ts" gets their declarations. Responses carry a strong ETag and Cache-Control: no-cache,
// so browsers revalidate (a 304 without a body) and pick up a new version
// as soon as the server has one; gzip is used when the client accepts it.
func ClientHandler() http.Handler {
	return &clientHandler{
		js:       newClientFile("client/dist/live.js", "text/javascript; charset=utf-8"),
		dts:      newClientFile("client/live.d.ts", "application/typescript; charset=utf-8"),
		reactJS:  newClientFile("client/react.js", "text/javascript; charset=utf-8"),
		reactDTS: newClientFile("client/react.d.ts", "application/typescript; charset=utf-8"),
	}
}

type clientHandler struct {
	js, dts, reactJS, reactDTS *clientFile
}

// clientFile is one embedded file, with its gzipped form and their ETags.
type clientFile struct {
	name, contentType string
	body, gz          []byte
	etag, gzETag      string
}

func newClientFile(name, contentType string) *clientFile {
	body, err := clientFiles.ReadFile(name)
	if err != nil {
		panic("live: embedded client file missing: " + err.Error())
	}
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	zw.Write(body)
	zw.Close()
	sum := sha256.Sum256(body)
	tag := base64.RawURLEncoding.EncodeToString(sum[:12])
	return &clientFile{
		name:        name[strings.LastIndexByte(name, '/')+1:],
		contentType: contentType,
		body:        body,
		gz:          b.Bytes(),
		etag:        `"` + tag + `"`,
		gzETag:      `"` + tag + `-gzip"`,
	}
}

func (h *clientHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not supported here")
		return
	}
	f := h.js
	switch p := r.URL.Path; {
	case strings.HasSuffix(p, "react.d.ts"):
		f = h.reactDTS
	case strings.HasSuffix(p, "react.js"):
		f = h.reactJS
	case strings.HasSuffix(p, ".d.ts"):
		f = h.dts
	}
	hd := w.Header()
	hd.Set("Content-Type", f.contentType)
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Add("Vary", "Accept-Encoding")
	body, etag := f.body, f.etag
	if acceptsGzip(r.Header.Values("Accept-Encoding")) {
		body, etag = f.gz, f.gzETag
		hd.Set("Content-Encoding", "gzip")
	}
	hd.Set("ETag", etag)
	// ServeContent answers If-None-Match with 304, HEAD and ranges.
	http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(body))
}

// acceptsGzip reports whether Accept-Encoding admits gzip: listed without
// q=0, or "*" with no refusal of gzip.
func acceptsGzip(values []string) bool {
	star := false
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			coding = strings.ToLower(strings.TrimSpace(coding))
			if coding != "gzip" && coding != "x-gzip" && coding != "*" {
				continue
			}
			refused := false
			for _, p := range strings.Split(params, ";") {
				k, q, _ := strings.Cut(strings.TrimSpace(p), "=")
				if strings.EqualFold(strings.TrimSpace(k), "q") && strings.Trim(strings.TrimSpace(q), "0.") == "" {
					refused = true
				}
			}
			if coding == "*" {
				star = !refused
				continue
			}
			return !refused
		}
	}
	return star
}
