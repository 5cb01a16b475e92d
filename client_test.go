package live_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"testing"

	"github.com/go-live/live"
	"github.com/google/go-cmp/cmp"
)

// clientServer mounts ClientHandler as the doc comment says.
func clientServer(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("GET /live.js", live.ClientHandler())
	mux.Handle("GET /live.d.ts", live.ClientHandler())
	mux.Handle("GET /react.js", live.ClientHandler())
	mux.Handle("GET /react.d.ts", live.ClientHandler())
	mux.Handle("/other/live.js", live.ClientHandler()) // every method, to see the 405
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// rawGet sends a request without the transport's own gzip handling.
func rawGet(t *testing.T, method, url string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	client.CloseIdleConnections()
	return resp, body
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("body is not gzip: %v", err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestClientHandler(t *testing.T) {
	srv := clientServer(t)
	js, err := os.ReadFile("client/dist/live.js")
	if err != nil {
		t.Fatal(err)
	}
	dts, err := os.ReadFile("client/live.d.ts")
	if err != nil {
		t.Fatal(err)
	}
	reactJS, err := os.ReadFile("client/react.js")
	if err != nil {
		t.Fatal(err)
	}
	reactDTS, err := os.ReadFile("client/react.d.ts")
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name        string
		method      string
		path        string
		header      http.Header
		status      int
		contentType string
		encoding    string
		body        []byte // after decoding; nil for none
	}{
		{"module", "GET", "/live.js", nil, 200, "text/javascript; charset=utf-8", "", js},
		{"module gzipped", "GET", "/live.js", http.Header{"Accept-Encoding": {"gzip, deflate, br"}}, 200, "text/javascript; charset=utf-8", "gzip", js},
		{"gzip refused", "GET", "/live.js", http.Header{"Accept-Encoding": {"gzip;q=0, *"}}, 200, "text/javascript; charset=utf-8", "", js},
		{"any encoding", "GET", "/live.js", http.Header{"Accept-Encoding": {"*"}}, 200, "text/javascript; charset=utf-8", "gzip", js},
		{"identity only", "GET", "/live.js", http.Header{"Accept-Encoding": {"identity"}}, 200, "text/javascript; charset=utf-8", "", js},
		{"declarations", "GET", "/live.d.ts", nil, 200, "application/typescript; charset=utf-8", "", dts},
		{"react bindings", "GET", "/react.js", nil, 200, "text/javascript; charset=utf-8", "", reactJS},
		{"react bindings gzipped", "GET", "/react.js", http.Header{"Accept-Encoding": {"gzip"}}, 200, "text/javascript; charset=utf-8", "gzip", reactJS},
		{"react declarations", "GET", "/react.d.ts", nil, 200, "application/typescript; charset=utf-8", "", reactDTS},
		{"HEAD", "HEAD", "/live.js", nil, 200, "text/javascript; charset=utf-8", "", nil},
		{"POST", "POST", "/other/live.js", nil, 405, "application/json", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := rawGet(t, tt.method, srv.URL+tt.path, tt.header)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			if got := resp.Header.Get("Content-Type"); got != tt.contentType {
				t.Errorf("Content-Type %q, want %q", got, tt.contentType)
			}
			if resp.StatusCode == 405 {
				if got := resp.Header.Get("Allow"); got != "GET, HEAD" {
					t.Errorf("Allow %q, want GET, HEAD", got)
				}
				return
			}
			if got := resp.Header.Get("Content-Encoding"); got != tt.encoding {
				t.Errorf("Content-Encoding %q, want %q", got, tt.encoding)
			}
			if tt.encoding == "gzip" {
				body = gunzip(t, body)
			}
			if tt.body != nil && !bytes.Equal(body, tt.body) {
				t.Errorf("body (%d bytes) is not the file on disk (%d bytes): rebuild after editing client/", len(body), len(tt.body))
			}
			if tt.method == "HEAD" && len(body) != 0 {
				t.Errorf("HEAD answered with a %d-byte body", len(body))
			}
			want := map[string]string{
				"Cache-Control":          "no-cache",
				"X-Content-Type-Options": "nosniff",
				"Vary":                   "Accept-Encoding",
			}
			got := map[string]string{}
			for k := range want {
				got[k] = resp.Header.Get(k)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("headers (-want +got):\n%s", diff)
			}
			if etag := resp.Header.Get("ETag"); len(etag) < 10 || etag[0] != '"' || etag[len(etag)-1] != '"' {
				t.Errorf("ETag %q is not a strong entity tag", etag)
			}
		})
	}
}

// TestClientHandlerRevalidation checks the conditional requests browsers
// make for a no-cache resource: a matching ETag gets 304 without a body,
// and each encoding has its own ETag.
func TestClientHandlerRevalidation(t *testing.T) {
	srv := clientServer(t)
	plain, _ := rawGet(t, "GET", srv.URL+"/live.js", nil)
	zipped, _ := rawGet(t, "GET", srv.URL+"/live.js", http.Header{"Accept-Encoding": {"gzip"}})
	dts, _ := rawGet(t, "GET", srv.URL+"/live.d.ts", nil)
	tags := []string{plain.Header.Get("ETag"), zipped.Header.Get("ETag"), dts.Header.Get("ETag")}
	if tags[0] == tags[1] || tags[0] == tags[2] || tags[1] == tags[2] {
		t.Fatalf("ETags %q are not distinct", tags)
	}

	tests := []struct {
		name        string
		header      http.Header
		status      int
		wantBodyLen bool
	}{
		{"same version", http.Header{"If-None-Match": {tags[0]}}, 304, false},
		{"same version gzipped", http.Header{"If-None-Match": {tags[1]}, "Accept-Encoding": {"gzip"}}, 304, false},
		{"one of several", http.Header{"If-None-Match": {`"old", ` + tags[0]}}, 304, false},
		{"other version", http.Header{"If-None-Match": {`"old"`}}, 200, true},
		{"gzip tag for the plain body", http.Header{"If-None-Match": {tags[1]}}, 200, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := rawGet(t, "GET", srv.URL+"/live.js", tt.header)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if (len(body) > 0) != tt.wantBodyLen {
				t.Errorf("body of %d bytes", len(body))
			}
		})
	}
}

func ExampleClientHandler() {
	mux := http.NewServeMux()
	mux.Handle("GET /live.js", live.ClientHandler())

	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/live.js", nil))
	fmt.Println(rec.Code, rec.Header().Get("Content-Type"), rec.Header().Get("Cache-Control"))
	// Output: 200 text/javascript; charset=utf-8 no-cache
}

// TestVersionMatchesClientPackage checks that the browser client's npm
// package and this module are released in step: client/package.json (and
// its lock file) carry Version.
func TestVersionMatchesClientPackage(t *testing.T) {
	for _, name := range []string{"client/package.json", "client/package-lock.json"} {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		var pkg struct{ Name, Version string }
		if err := json.Unmarshal(b, &pkg); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if pkg.Name != "@go-live/live" || pkg.Version != live.Version {
			t.Errorf("%s: %s@%s; want @go-live/live@%s, as live.Version says", name, pkg.Name, pkg.Version, live.Version)
		}
	}
	if !regexp.MustCompile(`^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$`).MatchString(live.Version) {
		t.Errorf("live.Version %q is not a semantic version", live.Version)
	}
}
