package guard

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/floodgate-dev/floodgate/queue"
)

// Handler returns the guard's admin API, to be mounted at /v1/:
//
//	GET    /v1/stats                         counts per kind ([Stats])
//	GET    /v1/suppressions?address=A        one entry: {"suppressed": bool, "entry": ...}
//	GET    /v1/suppressions?cursor=C&count=N a page of entries and the next cursor ("0" at the end)
//	POST   /v1/suppressions                  {"address": A, "reason": R} adds an entry
//	DELETE /v1/suppressions?address=A        removes it (or a JSON body {"address": A})
//	GET    /v1/decisions?limit=N             the decision log, newest first (N ≤ the log's bound)
//	GET    /v1/breakers                      {"breakers": [BreakerState...]}, sorted by kind
//	POST   /v1/breakers/{kind}/trip          optional body {"reason": R} (or ?reason=R); the BreakerState
//	POST   /v1/breakers/{kind}/reset         the BreakerState
//	POST   /v1/breakers/{kind}/release?limit=N&all=1&dry_run=1  a [ReleaseResult]; by default
//	                                         only the held emails that pass a lane now
//	POST   /v1/breakers/{kind}/purge         {"purged": n}
//	POST   /v1/confirm                       {"id": ID}: the email's link was used ([Guard.Confirm])
//	POST   /v1/report                        {"id": ID}: its recipient did not ask for it ([Guard.Report])
//	POST   /v1/hash                          {"address": A}: {"hash": H}, A's name in logs ([Guard.HashRecipient])
//	POST   /v1/trace                         {"address": A}: A's [Trace]: decisions, caps, suppression, held emails, sends
//
// Responses are JSON; errors are {"error": "..."} with 400 for bad input,
// 404 for an unknown kind or email and 503 when Redis does not answer. The API has no authentication of its own:
// serve it on an operator-only listener.
func (g *Guard) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/stats", g.serveStats)
	mux.HandleFunc("GET /v1/suppressions", g.serveSuppressions)
	mux.HandleFunc("POST /v1/suppressions", g.serveSuppress)
	mux.HandleFunc("DELETE /v1/suppressions", g.serveUnsuppress)
	mux.HandleFunc("GET /v1/decisions", g.serveDecisions)
	mux.HandleFunc("GET /v1/breakers", g.serveBreakers)
	mux.HandleFunc("POST /v1/breakers/{kind}/trip", g.serveTrip)
	mux.HandleFunc("POST /v1/breakers/{kind}/reset", g.serveReset)
	mux.HandleFunc("POST /v1/breakers/{kind}/release", g.serveRelease)
	mux.HandleFunc("POST /v1/breakers/{kind}/purge", g.servePurge)
	mux.HandleFunc("POST /v1/confirm", g.serveFeedback(g.Confirm))
	mux.HandleFunc("POST /v1/report", g.serveFeedback(g.Report))
	mux.HandleFunc("POST /v1/hash", g.serveHash)
	mux.HandleFunc("POST /v1/trace", g.serveTrace)
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	code := http.StatusBadRequest
	switch {
	case errors.Is(err, ErrUnavailable):
		code = http.StatusServiceUnavailable
	case errors.Is(err, ErrUnknownKind), errors.Is(err, queue.ErrUnknownEmail):
		code = http.StatusNotFound
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func (g *Guard) serveStats(w http.ResponseWriter, r *http.Request) {
	st, err := g.Stats(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

type suppressionRequest struct {
	Address string `json:"address"`
	Reason  string `json:"reason"`
}

// readAddress reads the address from the query or, failing that, a JSON body.
func readAddress(w http.ResponseWriter, r *http.Request) (suppressionRequest, error) {
	if a := r.URL.Query().Get("address"); a != "" {
		return suppressionRequest{Address: a, Reason: r.URL.Query().Get("reason")}, nil
	}
	return readAddressBody(w, r)
}

// readAddressBody reads the address from a JSON body only and refuses one
// in the URL, for the endpoints whose access logs must not keep it.
func readAddressBody(w http.ResponseWriter, r *http.Request) (suppressionRequest, error) {
	var req suppressionRequest
	if r.URL.Query().Get("address") != "" {
		return req, errors.New("guard: the address goes in the JSON body, not the URL")
	}
	if r.Body == nil || r.ContentLength == 0 {
		return req, errors.New("guard: address is required")
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, errors.New("guard: body must be JSON {\"address\": ..., \"reason\": ...}")
	}
	if req.Address == "" {
		return req, errors.New("guard: address is required")
	}
	return req, nil
}

func (g *Guard) serveSuppressions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if a := q.Get("address"); a != "" {
		s, ok, err := g.LookupSuppression(r.Context(), a)
		if err != nil {
			writeError(w, err)
			return
		}
		resp := map[string]any{"suppressed": ok}
		if ok {
			resp["entry"] = s
		}
		writeJSON(w, http.StatusOK, resp)
		return
	}
	var cursor uint64
	count := 100
	if c := q.Get("cursor"); c != "" {
		n, err := strconv.ParseUint(c, 10, 64)
		if err != nil {
			writeError(w, errors.New("guard: cursor must be an unsigned integer"))
			return
		}
		cursor = n
	}
	if c := q.Get("count"); c != "" {
		n, err := strconv.Atoi(c)
		if err != nil || n <= 0 || n > 10000 {
			writeError(w, errors.New("guard: count must be between 1 and 10000"))
			return
		}
		count = n
	}
	list, next, err := g.ListSuppressions(r.Context(), cursor, count)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": list, "cursor": strconv.FormatUint(next, 10)})
}

func (g *Guard) serveSuppress(w http.ResponseWriter, r *http.Request) {
	req, err := readAddress(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	if err := g.Suppress(r.Context(), req.Address, req.Reason); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"suppressed": true})
}

func (g *Guard) serveUnsuppress(w http.ResponseWriter, r *http.Request) {
	req, err := readAddress(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	removed, err := g.unsuppress(r.Context(), req.Address)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"removed": removed})
}

func (g *Guard) serveDecisions(w http.ResponseWriter, r *http.Request) {
	limit := 100
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		bound, _ := strconv.Atoi(g.logLen)
		if err != nil || n <= 0 || n > bound {
			writeError(w, errors.New("guard: limit must be between 1 and "+g.logLen))
			return
		}
		limit = n
	}
	ds, err := g.Decisions(r.Context(), limit)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"decisions": ds})
}

func (g *Guard) serveBreakers(w http.ResponseWriter, r *http.Request) {
	bs, err := g.Breakers(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"breakers": bs})
}

func (g *Guard) serveTrip(w http.ResponseWriter, r *http.Request) {
	reason := r.URL.Query().Get("reason")
	if r.Body != nil && r.ContentLength != 0 {
		var req struct {
			Reason string `json:"reason"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
			writeError(w, errors.New("guard: body must be JSON {\"reason\": ...}"))
			return
		}
		if req.Reason != "" {
			reason = req.Reason
		}
	}
	b, err := g.Trip(r.Context(), r.PathValue("kind"), reason)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, b)
}

func (g *Guard) serveReset(w http.ResponseWriter, r *http.Request) {
	b, err := g.Reset(r.Context(), r.PathValue("kind"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, b)
}

func (g *Guard) serveRelease(w http.ResponseWriter, r *http.Request) {
	limit := 0
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			writeError(w, errors.New("guard: limit must be a non-negative integer (0: all)"))
			return
		}
		limit = n
	}
	q := r.URL.Query()
	opts := ReleaseOptions{Limit: limit, All: q.Get("all") == "1" || q.Get("all") == "true",
		DryRun: q.Get("dry_run") == "1" || q.Get("dry_run") == "true"}
	res, err := g.Release(r.Context(), r.PathValue("kind"), opts)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// serveHash names an address as logs do; the address travels in the body,
// and the operator needs no copy of the hash key.
func (g *Guard) serveHash(w http.ResponseWriter, r *http.Request) {
	req, err := readAddressBody(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	if _, err := queue.NormalizeAddress(req.Address); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"hash": g.HashRecipient(req.Address)})
}

// serveTrace answers "what happened to this recipient's emails"; like
// serveHash, the address travels in the body only, so that no access log
// keeps it.
func (g *Guard) serveTrace(w http.ResponseWriter, r *http.Request) {
	req, err := readAddressBody(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	tr, err := g.Trace(r.Context(), req.Address)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, tr)
}

// serveFeedback serves POST {"id": ID} for Confirm or Report; the id is in
// the body so that it is not kept in access logs.
func (g *Guard) serveFeedback(f func(context.Context, string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ID string `json:"id"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil || !validID(req.ID) {
			writeError(w, errors.New("guard: body must be JSON {\"id\": ID}, an email id from a receipt"))
			return
		}
		if err := f(r.Context(), req.ID); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"id": req.ID, "result": "recorded"})
	}
}

// validID reports whether s looks like an email id: lower-case hex.
func validID(s string) bool {
	return s != "" && len(s) <= 64 && !strings.ContainsFunc(s, func(r rune) bool { return !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') })
}

func (g *Guard) servePurge(w http.ResponseWriter, r *http.Request) {
	n, err := g.Purge(r.Context(), r.PathValue("kind"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"purged": n})
}
