// Package drill runs floodgate's flood drill: it replays a password-reset
// flood (many requests over many recipients from many sources) while
// legitimate notifications and resets flow, and reports what the guard and
// the surge breaker did, measured at the SMTP sink rather than taken from
// floodgate's own counters alone.
//
// [Run] works in two modes. Embedded (the default) starts everything in
// the process: a real redis-server subprocess, an smtpsink, workers with a
// pooled SMTP client to the sink, and the guard's admin API on loopback,
// read over HTTP like a deployment's. Deployment mode ([Config].RedisURL
// set) enqueues into a running stack's Redis and reads its admin API and
// sink API.
//
// The [Report] checks conservation (DESIGN.md, Decisions): every request
// the drill made ends in exactly one terminal outcome or is still in
// flight, and every "sent" is a message at the sink. Its targets (time to
// open, notification latency, Redis memory, total time) are reported, never
// asserted by tests.
//
// Admin API requests use RFC 6750 bearer tokens; messages at the sink are
// matched to requests by their RFC 5322 Message-ID.
package drill
