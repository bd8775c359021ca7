package smtpsink

import (
	"encoding/json"
	"html/template"
	"net/http"
	"strconv"
	"strings"
)

// defaultLimit is the number of messages the API and page return when the
// request does not say.
const defaultLimit = 50

func (s *Server) newHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/messages", s.handleMessages)
	mux.HandleFunc("DELETE /api/messages", s.handleDelete)
	mux.HandleFunc("GET /api/messages/{id}", s.handleMessage)
	mux.HandleFunc("GET /api/messages/{id}/raw", s.handleRaw)
	mux.HandleFunc("GET /api/stats", s.handleStats)
	mux.HandleFunc("GET /{$}", s.handlePage)
	return mux
}

// parseQuery reads limit and to. limit is a positive integer or "all";
// absent means defaultLimit.
func parseQuery(r *http.Request) (Query, string) {
	q := Query{Limit: defaultLimit, To: r.URL.Query().Get("to")}
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
	m, ok := s.Message(r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, "message not found")
		return
	}
	writeJSON(w, http.StatusOK, m)
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

type pageData struct {
	Stats    Stats
	Query    Query
	Messages []Message
}

// pageTmpl is escaped by html/template: subjects and addresses come from
// whoever sent the mail.
var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"join": strings.Join,
}).Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>smtpsink</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3em .6em; border-bottom: 1px solid #ddd; vertical-align: top; }
th { background: #f4f4f4; }
.pass { color: #08660f; } .fail, .permerror { color: #b00020; } .temperror { color: #a15c00; } .none { color: #777; }
.mono { font-family: ui-monospace, monospace; font-size: 12px; }
</style>
</head>
<body>
<h1>smtpsink</h1>
<p>received {{.Stats.Received}} · stored {{.Stats.Stored}} · rejected {{.Stats.Rejected}} · dropped {{.Stats.Dropped}} · sessions {{.Stats.Sessions}} · duplicate Message-IDs {{.Stats.DuplicateMessageIDs}}</p>
<form method="get" action="/"><label>to <input name="to" value="{{.Query.To}}"></label> <button>filter</button></form>
<table>
<tr><th>received</th><th>from</th><th>to</th><th>subject</th><th>Message-ID</th><th>size</th><th>DKIM</th><th></th></tr>
{{range .Messages}}<tr>
<td class="mono">{{.ReceivedAt.Format "2006-01-02 15:04:05.000"}}</td>
<td>{{.MailFrom}}</td>
<td>{{join .RcptTo ", "}}</td>
<td>{{.Subject}}{{if .Dropped}} <strong>(dropped)</strong>{{end}}</td>
<td class="mono">{{.MessageID}}</td>
<td>{{.Size}}</td>
<td>{{range .DKIM}}<div class="{{.Result}}" title="{{.Error}}">{{.Result}}{{if .Domain}} {{.Domain}}{{end}}{{if .Selector}} s={{.Selector}}{{end}}{{if .Algorithm}} {{.Algorithm}}{{end}}</div>{{end}}</td>
<td><a href="/api/messages/{{.ID}}">json</a> <a href="/api/messages/{{.ID}}/raw">raw</a></td>
</tr>
{{else}}<tr><td colspan="8">no messages</td></tr>
{{end}}</table>
</body>
</html>
`))

func (s *Server) handlePage(w http.ResponseWriter, r *http.Request) {
	q, problem := parseQuery(r)
	if problem != "" {
		http.Error(w, problem, http.StatusBadRequest)
		return
	}
	data := pageData{Stats: s.Stats(), Query: q, Messages: s.Messages(q)}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
	if err := pageTmpl.Execute(w, data); err != nil {
		s.log.Debug("smtpsink: render page", "err", err)
	}
}
