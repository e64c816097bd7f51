// Package console is shardfn's web console: static files (HTML, CSS and
// plain JavaScript, no build step, nothing fetched from elsewhere) embedded
// in the binary and served by the admin listener at /ui/. The page reads the
// admin API: /metrics for the live charts, /admin/status, /admin/functions,
// /admin/instances/..., /state/... (view and edit), /admin/egress/... and
// /admin/dead-letters (list and replay).
package console

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed ui
var files embed.FS

// Files returns the console's files (index.html, console.js, console.css).
func Files() fs.FS {
	sub, err := fs.Sub(files, "ui")
	if err != nil {
		panic(err) // the embedded tree always has ui/
	}
	return sub
}

// Handler serves the console's files; mount it with the /ui/ prefix
// stripped. Responses may be cached by the browser for a minute.
func Handler() http.Handler {
	fsrv := http.FileServerFS(Files())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'")
		fsrv.ServeHTTP(w, r)
	})
}
