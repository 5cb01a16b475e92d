package main

import (
	"net/http"

	"github.com/go-live/live/inspect"
)

// mountInspector serves the hub's inspector at /admin/live/, for the
// inspector's browser test. A real application mounts it behind its admin
// authentication: the inspector authenticates nobody, and this test
// server has no admins to check.
//
//	GET  /admin/live/                 the page (?user= searches a user)
//	POST /admin/live/disconnect, …    its actions
func (s *server) mountInspector(mux *http.ServeMux) {
	mux.Handle("/admin/live/", http.StripPrefix("/admin/live", inspect.Handler(s.hub, nil)))
}
