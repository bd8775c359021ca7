package smtpsink

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"regexp"
	"strconv"
	"time"
)

// defaultLimit is the number of messages the API and page return when the
// request does not say.
const defaultLimit = 50

func (s *Server) newHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/messages", s.handleMessages)
	mux.HandleFunc("DELETE /api/messages", s.handleDelete)
	mux.HandleFunc("GET /api/messages/{id}", s.handleMessage)
	mux.HandleFunc("DELETE /api/messages/{id}", s.handleDeleteOne)
	mux.HandleFunc("GET /api/messages/{id}/raw", s.handleRaw)
	mux.HandleFunc("GET /api/messages/{id}/html", s.handleHTML)
	mux.HandleFunc("GET /api/events", s.handleEvents)
	mux.HandleFunc("GET /api/stats", s.handleStats)
	mux.HandleFunc("GET /api/reports", s.handleReports)
	mux.HandleFunc("GET /api/reports/{id}/raw", s.handleReportRaw)
	mux.HandleFunc("GET /{$}", s.handlePage)
	mux.Handle("GET /assets/", assetHandler())
	return mux
}

// parseQuery reads limit, to, kind and q (the search). limit is a positive
// integer or "all"; absent means defaultLimit.
func parseQuery(r *http.Request) (Query, string) {
	v := r.URL.Query()
	q := Query{Limit: defaultLimit, To: v.Get("to"), Kind: v.Get("kind"), Search: v.Get("q")}
	switch l := r.URL.Query().Get("limit"); l {
	case "":
	case "all":
		q.Limit = 0
	default:
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 {
			return q, `limit must be a positive integer or "all"`
		}
		q.Limit = n
	}
	return q, ""
}

func (s *Server) handleMessages(w http.ResponseWriter, r *http.Request) {
	q, problem := parseQuery(r)
	if problem != "" {
		writeError(w, http.StatusBadRequest, problem)
		return
	}
	writeJSON(w, http.StatusOK, s.Messages(q))
}

func (s *Server) handleMessage(w http.ResponseWriter, r *http.Request) {
	d, ok := s.Detail(r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, "message not found")
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) handleDeleteOne(w http.ResponseWriter, r *http.Request) {
	if !s.Delete(r.PathValue("id")) {
		writeError(w, http.StatusNotFound, "message not found")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleRaw(w http.ResponseWriter, r *http.Request) {
	m, ok := s.Message(r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, "message not found")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "message/rfc822")
	h.Set("Content-Length", strconv.Itoa(len(m.Raw)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	w.Write(m.Raw)
}

func (s *Server) handleDelete(w http.ResponseWriter, _ *http.Request) {
	s.Reset()
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleReports(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Reports())
}

func (s *Server) handleReportRaw(w http.ResponseWriter, r *http.Request) {
	rep, ok := s.reports.get(r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, "report not found")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "message/rfc822")
	h.Set("Content-Length", strconv.Itoa(len(rep.Raw)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	w.Write(rep.Raw)
}

func (s *Server) handleStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Stats())
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.Encode(v)
}

// apiError is the body of every API error response.
type apiError struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, apiError{Error: msg})
}

// htmlCSP is the policy of a message's HTML: nothing is fetched, nothing
// runs (the sandbox directive also applies when the document is opened on
// its own, outside the page's sandboxed iframe), inline styles and data:
// images render, and links may open in a new, unsandboxed tab.
const htmlCSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'self'; " +
	"sandbox allow-popups allow-popups-to-escape-sandbox"

// handleHTML serves a message's HTML part as a document of its own, for the
// page's iframe.
func (s *Server) handleHTML(w http.ResponseWriter, r *http.Request) {
	d, ok := s.Detail(r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, "message not found")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", htmlCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write([]byte(withBaseTarget(d.HTML)))
}

var doctype = regexp.MustCompile(`(?is)^\s*<!doctype[^>]*>`)

// withBaseTarget makes the links of an email open in a new tab rather than
// inside the iframe, keeping a leading doctype first so that the document's
// rendering mode does not change.
func withBaseTarget(body string) string {
	const base = `<base target="_blank">`
	if loc := doctype.FindStringIndex(body); loc != nil {
		return body[:loc[1]] + base + body[loc[1]:]
	}
	return base + body
}

// Live updates: a change is announced at most this often, so a flood of
// mail costs a watching page a few requests a second, not one per message.
const (
	eventInterval = 250 * time.Millisecond
	eventKeepOpen = 30 * time.Second
)

// handleEvents streams Server-Sent Events: an event "change" carrying the
// [Stats] now and after each change of the stored messages, and a comment
// line every eventKeepOpen so that proxies keep the stream open.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	keep := time.NewTicker(eventKeepOpen)
	defer keep.Stop()
	send := func(event []byte) bool {
		w.Write(event)
		return rc.Flush() == nil
	}
	for {
		s.store.mu.Lock()
		changed := s.store.watchLocked()
		st := s.store.snapshotLocked()
		s.store.mu.Unlock()
		b, _ := json.Marshal(st)
		if !send(append(append([]byte("event: change\ndata: "), b...), "\n\n"...)) {
			return
		}
		for waiting := true; waiting; {
			select {
			case <-changed:
				waiting = false
			case <-keep.C:
				if !send([]byte(": keep-alive\n\n")) {
					return
				}
			case <-r.Context().Done():
				return
			case <-s.done:
				return
			}
		}
		// Coalesce a burst of changes into one event.
		t := time.NewTimer(eventInterval)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		case <-s.done:
			t.Stop()
			return
		}
	}
}

//go:embed ui
var uiFiles embed.FS

// pageCSP allows the page its own script, style and API, and frames only
// from itself (the message HTML); nothing inline, nothing from elsewhere.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; frame-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func setPageHeaders(h http.Header) {
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
}

func (s *Server) handlePage(w http.ResponseWriter, _ *http.Request) {
	b, err := uiFiles.ReadFile("ui/index.html")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	setPageHeaders(w.Header())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(b)
}

func assetHandler() http.Handler {
	sub, _ := fs.Sub(uiFiles, "ui")
	files := http.StripPrefix("/assets/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setPageHeaders(w.Header())
		files.ServeHTTP(w, r)
	})
}
