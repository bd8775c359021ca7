// Package adminapi is a client for a floodgate worker's admin API, served
// under /v1/ on the worker's -http listener when -admin is on: the surge
// breakers ([Client.Breakers], [Client.Trip], [Client.Reset],
// [Client.Release], [Client.Purge]), the guard's decision counts
// ([Client.Stats]), the suppression list and the decision log.
//
// Requests carry the admin token as an RFC 6750 bearer token when one is
// configured. Error responses become an [*APIError]; a 401 matches
// [ErrUnauthorized], a 404 [ErrNotFound], and a worker that cannot be
// reached [ErrUnreachable]. The operator CLI (cmd/floodctl) and the flood
// drill (cmd/drill) are built on it.
package adminapi
