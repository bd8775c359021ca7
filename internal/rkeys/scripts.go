package rkeys

import (
	"bytes"
	"embed"
	"fmt"
	"strconv"
	"strings"
	"text/template"

	"github.com/redis/go-redis/v9"
)

//go:embed lua/*.lua
var luaFiles embed.FS

// scripts holds the Lua files as templates; breaker.lua is plain Lua.
var scripts = template.Must(template.New("").Funcs(template.FuncMap{
	// Placeholders, replaced per script by render.
	"suffix": func(string) string { return "" },
	"clock":  func() string { return "" },
	"lib":    func() string { return "" },
	"open":   func(_, _, _, _ string) string { return "" },
	// trace is the statement by which every script adds an entry (a Lua
	// expression, without its newline) to the recipient's [Trace] tkey,
	// to expire after ttl ms (a Lua expression). It appends, so that a
	// decision does not rewrite the whole trace; past TRMAX bytes it
	// keeps the entry and the TRKEEP bytes before it, which is what
	// the reader shows.
	"trace": func(entry, ttl string) string {
		return "do local e = '\\n' .. " + entry + "\n" +
			"  if redis.call('APPEND', tkey, e) > TRMAX then\n" +
			"    redis.call('SET', tkey, redis.call('GETRANGE', tkey, -(TRKEEP + #e), -1), 'PX', " + ttl + ")\n" +
			"  else redis.call('PEXPIRE', tkey, " + ttl + ") end end"
	},
}).ParseFS(luaFiles, "lua/*.lua"))

// AdmitConfig is one kind's admission settings. [AdmitScript] compiles
// them into the kind's script as constants, so the hot path neither sends
// nor parses them.
type AdmitConfig struct {
	// Kind is the kind's name: lower-case letters, digits, '_' or '-'.
	Kind string
	// LogLen is the decision log's MAXLEN.
	LogLen int
	// Breaker is the kind's breaker.
	Breaker BreakerConfig
	// Dedup is the dedup window in whole seconds; 0 = none.
	Dedup int64
	// RecipientTTL is how long a recipient log lives after its newest
	// entry, ms; RecipientLen how many entries it keeps.
	RecipientTTL int64
	RecipientLen int
	// Recipient are the per-recipient windows: limit and whole seconds.
	Recipient [][2]int64
	// SourceTTL and SourceLen are the source log's TTL (ms) and length.
	SourceTTL int64
	SourceLen int
	// Source are the per-source windows: limit and ms.
	Source [][2]int64
	// Groups are the source-group logs, one per configured prefix, in the
	// order their keys are passed.
	Groups []GroupConfig
	// UntrustedAfter shrinks a source's cap to this many emails when none
	// of them was redeemed (and the kind's redemption share is
	// established); 0 = off.
	UntrustedAfter int
}

// GroupConfig is the log of one source-group prefix: its TTL (ms), its
// length and its windows (limit and ms).
type GroupConfig struct {
	TTL     int64
	Len     int
	Windows [][2]int64
}

// BreakerConfig is one kind's surge breaker, compiled into the kind's
// scripts as constants (the header written by writeHeader). Rates are
// counted over a sliding window of WindowMS: the count of the window
// before, weighted by the share of it still inside the sliding window, plus
// the count of the current one. Counts are of eligible requests: those that
// passed dedup and every cap.
//
// Every script that reads a breaker ends its reply with a suffix: the
// state ("|<state><reason>", as in [Breaker]) when it is not closed or when
// it moved, then one "|from,to,reason,rate,baseline,at_ms,until_ms,level"
// per transition the script made (states "closed", "open", "half_open";
// rate and baseline in requests/s; until 0 when none). Transitions happen
// inside the scripts, so exactly one process, the one whose decision moved
// the breaker, learns of each.
type BreakerConfig struct {
	// WindowMS is the length of the counting window, ms.
	WindowMS int64
	// FloorCount is the count per window below which the surge trip never
	// fires; SurgeFactor the multiple of the baseline that fires it (0:
	// surge trip off).
	FloorCount, SurgeFactor float64
	// Alpha is the weight of one window in the learned average: window /
	// learning horizon. WarmupMS is how long a new kind learns before the
	// surge trip fires. RisePerWindow bounds the baseline's rise a window
	// (a fraction of the baseline or of the floor rate, whichever is
	// more); RisePerDay a day (a factor of the baseline at the day's start,
	// or of the floor rate); DayMS is the day.
	Alpha                     float64
	WarmupMS, DayMS           int64
	RisePerWindow, RisePerDay float64
	// CeilingCount, when positive, is a fixed rate ceiling per window;
	// otherwise the ceiling is max(CeilingMinCount, CeilingFactor ×
	// baseline), and off when CeilingFactor is 0 too.
	CeilingCount, CeilingFactor, CeilingMinCount float64
	// BudgetMS is the budget period of new recipients; BudgetCount a fixed
	// budget per period, or else max(BudgetMin, BudgetFactor × baseline ×
	// period), off when BudgetFactor is 0 too.
	BudgetMS                             int64
	BudgetCount, BudgetFactor, BudgetMin float64
	// RefusalRatio is the share of requests refused by caps that trips
	// (0: off), once RefusalCount requests were counted in the window and
	// at least RefusalSources distinct source groups and recipients were
	// refused.
	RefusalRatio, RefusalCount float64
	RefusalSources             int
	// RelayFailures is how many consecutive relay failures trip (0: off);
	// RelayRatio the share of relay failures among relay results in the
	// window that trips, with at least RelayFailures of them (0: off).
	RelayFailures int
	RelayRatio    float64
	// CooldownMS is how long the breaker stays open before probing;
	// MaxCooldownMS bounds it after doublings.
	CooldownMS, MaxCooldownMS int64
	// ProbeUS is the interval between probes while half-open, µs.
	ProbeUS int64
	// Mode is "hold", "clamp" or "shed".
	Mode string
	// HoldMax bounds the held emails; HoldTTLMS is the kind's TTL.
	HoldMax   int
	HoldTTLMS int64
	// Lanes while open: LaneUS a fixed interval per lane, or else
	// LaneFactor × baseline, never slower than one per LaneMaxUS. Each of
	// the three lanes can be turned off. RerequestS is how old a held
	// email must be for a re-request to pass its lane.
	LaneUS, LaneMaxUS                        int64
	LaneFactor                               float64
	LaneTrusted, LaneRerequest, LaneRedeemed bool
	RerequestS                               int64
	// LaneBurst is how many emails each lane lets through back to back.
	LaneBurst int
	// RerequestSrcLen, when not zero, also asks of a re-request that its
	// source log hold fewer than RerequestSrcLen/6 entries younger than
	// RerequestSrcMS (the entry at RerequestSrcFrom is older).
	RerequestSrcLen, RerequestSrcFrom, RerequestSrcMS int64
	// Redemption: buckets of RedeemBucketMS (0: off) judged RedeemLagMS
	// after they end, when they hold at least RedeemMin sent emails; a
	// share below RedeemCollapse × the learned share, from at least
	// RedeemSources source groups, trips, once RedeemBuckets buckets with a
	// share of at least RedeemNeed were learned. RedeemAlpha is the weight
	// of one bucket (bucket / horizon); RedeemFall the least factor the
	// learned share keeps per bucket.
	RedeemBucketMS, RedeemLagMS                         int64
	RedeemMin, RedeemSources, RedeemBuckets             int
	RedeemCollapse, RedeemNeed, RedeemAlpha, RedeemFall float64
	// Reports trip when at least ReportMin reports, from ReportSources
	// source groups, are ReportRatio of the emails sent over two buckets
	// (0: off).
	ReportMin, ReportSources int
	ReportRatio              float64
	// The bounce trip ([BounceTripScript]): hard bounces at BounceRatio,
	// or complaints at ComplaintRatio, of at least BounceMinSends emails
	// sent in the last hour (0: off).
	BounceMinSends              int
	BounceRatio, ComplaintRatio float64
	// CloseFactor: a breaker opened by redemption or reports closes, at
	// the end of a half-open window, only when the rate is at most this
	// multiple of the baseline.
	CloseFactor float64
	// TraceTTLMS is how long a recipient's [Trace] lives after its newest
	// entry: the kind's longest per-recipient window or its TTL, whichever
	// is longer, so it outlives both the caps it explains and the email.
	TraceTTLMS int64
	// TraceNewMax is how many traces a refusal about a recipient with no
	// history may begin a minute ([TraceBudget]); TraceNewTTLMS how long
	// such a trace lives.
	TraceNewMax   int
	TraceNewTTLMS int64
}

// rawSuffix returns a Lua expression for the breaker suffix of the
// unparsed state v, for replies made before the state is loaded (or when
// it needs no loading): "|<state><reason>" when open or half-open.
func rawSuffix(v string) string {
	return "((string.sub(" + v + " or 'c', 1, 1) == 'o' or string.sub(" + v + " or 'c', 1, 1) == 'h') and '|' .. string.sub(" + v + ", 1, 2) or '')"
}

// clockLua sets NOW and NOWUS from TIME in t.
const clockLua = `NOW = t[1] * 1000 + math.floor(t[2] / 1000)
NOWUS = (t[1] - 1577836800) * 1000000 + t[2]`

// statePattern matches [Breaker]'s value; headPattern its head, which is
// all a closed breaker's fast path reads; prevfPattern and tailPattern the
// refusals of the window before and the open breaker's fields.
const (
	statePattern = `^(%a)(%S) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+)$`
	headPattern  = `^(%a)(%S) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+)`
	prevfPattern = `^%S+ %d+ %d+ %d+ %d+ %d+ %d+ %d+ (%d+)`
	tailPattern  = ` (%d+) (%d+) (%d+) (%d+)$`
)

// num formats f as a Lua number literal.
func num(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func lbool(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// writeHeader writes the constants of a kind's breaker and the variables
// every breaker script shares, with the kind's fixed keys as constants.
func writeHeader(b *strings.Builder, kind string, logLen int, c BreakerConfig) {
	checkKind(kind)
	switch c.Mode {
	case "hold", "clamp", "shed":
	default:
		panic("rkeys: breaker mode " + strconv.Quote(c.Mode))
	}
	w := max(c.WindowMS, 1)
	// LOGLEN is a string: it is only ever a command argument, which Redis
	// would otherwise format from a Lua number on every call.
	fmt.Fprintf(b, "local KIND, TAG, LOGLEN = '%s', '%s', '%d'\n", kind, Tag, max(logLen, 1))
	fmt.Fprintf(b, "local OFF, NONE, NOGROUP = 1e15, '%s', '%s'\n", None, luaBytes(NoGroup))
	fmt.Fprintf(b, "local BPAT, BHEAD, BPREVF, BTAIL = '%s', '%s', '%s', '%s'\n", statePattern, headPattern, prevfPattern, tailPattern)
	fmt.Fprintf(b, "local W, FLOORC, FLOORR, SF, ALPHA = %d, %s, %s, %s, %s\n", w, num(c.FloorCount),
		num(c.FloorCount*1000/float64(w)), num(c.SurgeFactor), num(min(max(c.Alpha, 1e-9), 1)))
	fmt.Fprintf(b, "local WARM, DAY, RISEW, RISED = %d, %d, %s, %s\n", c.WarmupMS, max(c.DayMS, 1), num(c.RisePerWindow), num(max(c.RisePerDay, 1)))
	fmt.Fprintf(b, "local CEILC, CEILF, CEILMINC = %s, %s, %s\n", num(c.CeilingCount), num(c.CeilingFactor), num(c.CeilingMinCount))
	fmt.Fprintf(b, "local BUDP, BUDC, BUDF, BUDMIN, BUDON = %d, %s, %s, %s, %s\n", max(c.BudgetMS, w), num(c.BudgetCount), num(c.BudgetFactor),
		num(c.BudgetMin), lbool(c.BudgetCount > 0 || c.BudgetFactor > 0))
	fmt.Fprintf(b, "local RR, RMINC, RSRC = %s, %s, %d\n", num(c.RefusalRatio), num(c.RefusalCount), c.RefusalSources)
	fmt.Fprintf(b, "local RF, RRAT = %d, %s\n", c.RelayFailures, num(c.RelayRatio))
	fmt.Fprintf(b, "local COOL, MAXCOOL, PROBE, MODE = %d, %d, %d, '%s'\n", max(c.CooldownMS, 1), max(c.MaxCooldownMS, c.CooldownMS, 1), max(c.ProbeUS, 1), c.Mode)
	fmt.Fprintf(b, "local HOLDMAX, HOLDTTL, SWEEPMS = %d, %d, %d\n", c.HoldMax, max(c.HoldTTLMS, 1), SweepMargin)
	fmt.Fprintf(b, "local LANEUS, LANEMAXUS, LANEF, RQAFTER, LANEB = %d, %d, %s, %d, %d\n", c.LaneUS, max(c.LaneMaxUS, 1), num(c.LaneFactor), c.RerequestS, max(c.LaneBurst, 1))
	fmt.Fprintf(b, "local RDB, RDLAG, RDMIN, RDSRC, RDNB = %d, %d, %d, %d, %d\n", c.RedeemBucketMS, c.RedeemLagMS, max(c.RedeemMin, 1), c.RedeemSources, max(c.RedeemBuckets, 1))
	fmt.Fprintf(b, "local RDCOL, RDNEED, RDALPHA, RDFALL = %s, %s, %s, %s\n", num(c.RedeemCollapse), num(c.RedeemNeed), num(min(max(c.RedeemAlpha, 1e-9), 1)), num(c.RedeemFall))
	fmt.Fprintf(b, "local RPMIN, RPSRC, RPRAT, CLOSEF = %d, %d, %s, %s\n", c.ReportMin, c.ReportSources, num(c.ReportRatio), num(c.CloseFactor))
	fmt.Fprintf(b, "local RGPFX, RPPFX = '%s', '%s'\n", RedemptionSources(kind), ReportSources(kind))
	// The trace TTLs are strings, being only command arguments.
	fmt.Fprintf(b, "local TRKEEP, TRMAX, TRTTL, TREPOCH = %d, %d, '%d', %d\n", TraceKeep, TraceMax, max(c.TraceTTLMS, 1), LogEpoch*1000)
	fmt.Fprintf(b, "local TRNEW, TRNTTL, TBK = %d, '%d', '%s'\n", c.TraceNewMax, max(c.TraceNewTTLMS, 1), TraceBudget(kind))
	// The kind's fixed keys are constants of its scripts rather than
	// arguments: every key shares the hash tag, so each script runs on the
	// node of the keys it declares, and the arguments a decision sends are
	// only its own email's keys.
	q := func(k string) string { return "'" + k + "'" }
	fmt.Fprintf(b, "local BK, IK, NK, FK, PK, SK, DK, RK, FSK, FRK = %s\n", strings.Join(mapStr(BreakerKeys(kind), q), ", "))
	fmt.Fprintf(b, "local HK, HRK, STK, LOGK, AK, KK = %s, %s, %s, %s, %s, %s\n", q(Held(kind)), q(Releasing(kind)), q(Stats), q(Decisions),
		q(Admitted(kind)), q(Kinds))
	fmt.Fprintf(b, "local LTK, LQK, LDK = %s, %s, %s\n", q(Lane(kind, 't')), q(Lane(kind, 'q')), q(Lane(kind, 'd')))
	b.WriteString(`local B, NOW, NOWUS, CNT, DCNT
local dirty, trans = false, nil
`)
}

// luaBytes writes s as the inside of a Lua string literal.
func luaBytes(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "\\%d", s[i])
	}
	return b.String()
}

func mapStr(in []string, f func(string) string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = f(s)
	}
	return out
}

// BreakerKeys returns the fixed breaker keys of a kind, which its scripts
// name as constants: [Breaker], [BreakerInfo], [BreakerCount],
// [BreakerRefused], [BreakerPace], [BreakerSendPace], [Budget],
// [Redemption], [RefusedSources] and [RefusedRecipients]. Besides them
// the scripts use the kind's [Held], [Releasing], [Admitted] and [Lane]
// keys and [Stats], [Decisions] and [Kinds].
func BreakerKeys(kind string) []string {
	return []string{Breaker(kind), BreakerInfo(kind), BreakerCount(kind), BreakerRefused(kind), BreakerPace(kind),
		BreakerSendPace(kind), Budget(kind), Redemption(kind), RefusedSources(kind), RefusedRecipients(kind)}
}

func checkKind(kind string) {
	if kind == "" || strings.ContainsFunc(kind, func(r rune) bool { return !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') }) {
		panic("rkeys: kind name " + strconv.Quote(kind) + " cannot be embedded in a script")
	}
}

// window is one sliding-log window as the templates use it: the log is
// long enough (Len) and its oldest entry in the window (at From) is
// younger than Per.
type window struct{ Len, From, Per int64 }

type groupData struct {
	Key, Cur int
	Windows  []window
	Keep     int
	TTL      int64
}

type admitData struct {
	Kind                      string
	LogLen                    int
	Logs, Refusals            bool
	Dedup                     int64
	Recipient, Source         []window
	Groups                    []groupData
	Untrusted                 *struct{ N, Len, From int64 }
	RecipientKeep, SourceKeep int
	RecipientTTL, SourceTTL   int64
	// TraceKey is the index of the [Trace] key in KEYS.
	TraceKey int
}

func (c AdmitConfig) data() admitData {
	d := admitData{Kind: c.Kind, LogLen: c.LogLen, Dedup: c.Dedup, Refusals: c.Breaker.RefusalRatio > 0,
		RecipientKeep: (max(c.RecipientLen, 1) - 1) * 19, RecipientTTL: max(c.RecipientTTL, 1),
		SourceKeep: (max(c.SourceLen, 1) - 1) * 6, SourceTTL: max(c.SourceTTL, 1)}
	for _, w := range c.Recipient {
		d.Recipient = append(d.Recipient, window{w[0] * 19, w[0]*19 - 9, w[1]})
	}
	for _, w := range c.Source {
		d.Source = append(d.Source, window{w[0] * 6, (w[0]-1)*6 + 1, w[1]})
	}
	for i, g := range c.Groups {
		gd := groupData{Key: AdmitGroupKey + i, Cur: 6 + i, Keep: (max(g.Len, 1) - 1) * 6, TTL: max(g.TTL, 1)}
		for _, w := range g.Windows {
			gd.Windows = append(gd.Windows, window{w[0] * 6, (w[0]-1)*6 + 1, w[1]})
		}
		d.Groups = append(d.Groups, gd)
	}
	if c.UntrustedAfter > 0 && len(c.Source) > 0 && c.Breaker.RedeemBucketMS > 0 {
		n := int64(c.UntrustedAfter)
		d.Untrusted = &struct{ N, Len, From int64 }{n, n * 6, (n-1)*6 + 1}
	}
	d.Logs = len(c.Source) > 0 || len(c.Groups) > 0
	d.TraceKey = AdmitGroupKey + len(c.Groups)
	return d
}

// AdmitGroupKey is the index (1-based, as in Lua) of the first group key
// in KEYS of the admission script.
const AdmitGroupKey = 4

// render executes the template file name with data for a kind's breaker
// c, with the header first; open is the open-breaker block's settings.
func render(name, kind string, logLen int, c BreakerConfig, data any) string {
	var hdr strings.Builder
	writeHeader(&hdr, kind, logLen, c)
	lib, err := luaFiles.ReadFile("lua/breaker.lua")
	if err != nil {
		panic(err)
	}
	t := template.Must(scripts.Lookup(name).Clone())
	t.Funcs(template.FuncMap{
		"suffix": rawSuffix,
		"clock":  func() string { return clockLua },
		"lib":    func() string { return string(lib) },
		"open": func(li, op, ai, st string) string {
			var out bytes.Buffer
			err := scripts.Lookup("open.lua").Execute(&out, map[string]any{"Li": li, "Op": op, "Ai": ai, "St": st, "Mode": c.Mode,
				"LaneTrusted": c.LaneTrusted, "LaneRerequest": c.LaneRerequest, "LaneRedeemed": c.LaneRedeemed,
				"RqSrcLen": c.RerequestSrcLen, "RqSrcFrom": c.RerequestSrcFrom, "RqSrcMS": c.RerequestSrcMS})
			if err != nil {
				panic(err)
			}
			return out.String()
		},
	})
	var out bytes.Buffer
	if err := t.Execute(&out, data); err != nil {
		panic(fmt.Sprintf("rkeys: %s: %v", name, err))
	}
	return hdr.String() + out.String()
}

// AdmitLua returns the Lua of [AdmitScript], for review and golden files.
func AdmitLua(c AdmitConfig) string {
	checkKind(c.Kind)
	return render("admit.lua", c.Kind, c.LogLen, c.Breaker, c.data())
}

// AdmitScript returns the admission script of one kind. It decides whether
// an email may be queued: suppression (the list, or a report of this
// kind), the dedup window, every per-recipient window, every per-source
// and per-source-group window, the source's redemption record, and the
// kind's breaker, atomically and in that order of precedence. Logs are
// written only for what passed the caps, so a refusal consumes nobody's
// quota; what passed them uses its source's and groups' quota even when
// the breaker holds or sheds it, and the recipient's only when it is
// queued. Every decision is counted in [Stats]; refusals, and admissions
// when sampled, are appended to [Decisions]. If the recipient log already
// holds this email's tag, an earlier run admitted it and its reply was
// lost: the script answers "queued:replay" and changes nothing.
//
// The breaker: eligible requests (those that passed the caps) are counted
// in [BreakerCount], new recipients among them in [Budget], refusals in
// [BreakerRefused] and the HLLs of refused sources and recipients; the
// first request of a window rolls it over (see lua/breaker.lua). It trips
// on surge (the eligible rate above the threshold, not while warming up),
// the rate ceiling, the budget of new recipients, or refusals (a share of
// the requests from many sources and recipients); the request that trips
// it is already subject to it. An open breaker (not for relay), or a
// half-open one, first lets lanes through, each paced on its own: trusted
// requests, sources or groups whose emails were redeemed before it opened,
// and recipients with a held email at least RerequestS old who ask again
// (one who asks sooner is a duplicate); then probes (half-open) or the
// clamp; then holds, clamps or sheds by its mode, marking the recipient
// ([HeldMarker]) so that its re-request is recognised.
//
// Every decision but a replay and a plain admission (queued, no lane, caps
// on the recipient: its log has it) is added to the recipient's [Trace],
// with the tag of the newest admission in the log before it.
//
// On the common path (breaker closed, same window, no trip) it makes
// MGET, TIME, INCR of the window count, INCR of the budget for a new
// recipient, a SET per log and one INCR, and creates no Lua closure.
//
// KEYS[1] -> recipient log ([Recipient] or [Account])
// KEYS[2] -> source log ([Source])
// KEYS[3] -> suppression ([Suppression])
// KEYS[4...] -> [Group] logs, one per configured prefix ([None] if the
// source has no such group)
// KEYS[4+groups] -> the recipient's [Trace]
// (The kind's fixed keys are constants of the script; the recipient's
// [HeldMarker], the source's [SourceTrust] and its narrowest group's
// [GroupTrust] are derived from KEYS.)
// --
// ARGV[1] -> email tag ([EmailTag])
// ARGV[2] -> email id
// ARGV[3] -> encoded payload (stored only when held)
// ARGV[4] -> "1" to log an admission (refusals are always logged)
// ARGV[5] -> recipient hash for the log
// ARGV[6] -> the trust signal, or ""
// ARGV[7] -> the source's narrowest group (or the source), for the HLLs
// ARGV[8] -> the index in KEYS of the narrowest group's log, "0" if none
//
// Returns "<outcome>:<reason>" followed by the breaker suffix (see
// [BreakerConfig]): "queued:", "queued:replay", "queued:probe",
// "queued:clamp", "queued:trusted", "queued:redeemed",
// "queued:rerequest", "suppressed:", "suppressed:reported", "duplicate:",
// "duplicate:held", "capped:recipient", "capped:source", "capped:group",
// "capped:unredeemed", "held:breaker", "held:replay", "shed:breaker",
// "shed:clamp" or "shed:hold_full".
func AdmitScript(c AdmitConfig) *redis.Script { return redis.NewScript(AdmitLua(c)) }

// DispatchLua returns the Lua of [DispatchScript].
func DispatchLua(kind string, c BreakerConfig) string {
	return render("dispatch.lua", kind, 0, c, map[string]string{"Kind": kind})
}

// DispatchScript returns the dispatch script of one kind. It decides
// whether one send attempt may proceed now. In order:
//
//  1. the idempotency claim: this attempt's claim → allowed again (a re-sent
//     script; the lease is renewed, no rate is consumed twice); sent →
//     duplicate (counted "redelivered", not as a new outcome); another
//     terminal state → that outcome again, uncounted; another attempt's live
//     claim → deferred until its lease ends; a claim released after
//     ambiguous results ("m<n>", see [SettleScript]) → free, and the count
//     n rides on the new claim ("<attempt>~<n>") and in the reply;
//  2. expiry: past the email's expires_at (Redis clock) → expired, terminal;
//  3. the kind's breaker: open for relay → deferred ("relay") until it
//     turns half-open; an email admitted or released through a lane
//     passes the other states; open in hold mode → parked in [Held]
//     (beyond hold_max, shed); open in shed mode → shed; open in clamp mode
//     or half-open → paced by [BreakerSendPace], the rest deferred
//     ("breaker", or "relay" for a relay breaker);
//  4. the global and the domain GCRA, both checked before either (or the
//     breaker's pace) is consumed; if either is exhausted → deferred,
//     nothing consumed, no claim taken;
//  5. otherwise the rates are consumed and the claim is taken with a lease.
//
// KEYS[1] -> claim ([Claim])
// KEYS[2] -> [Global]
// KEYS[3] -> domain rate ([Domain])
// KEYS[4] -> the recipient's [Trace]
// --
// ARGV[1]  -> claim value of this attempt ([AttemptValue])
// ARGV[2]  -> lease, ms
// ARGV[3]  -> expires_at, unix ms
// ARGV[4]  -> how long terminal claims outlive expires_at, ms
// ARGV[5]  -> global emission interval, µs
// ARGV[6]  -> global burst offset (interval × burst), µs
// ARGV[7]  -> domain emission interval, µs
// ARGV[8]  -> domain burst offset, µs
// ARGV[9]  -> email id
// ARGV[10] -> encoded payload (stored only when held)
// ARGV[11] -> "1" to log an allowed or deferred attempt
// ARGV[12] -> recipient hash for the log
// ARGV[13] -> decision log MAXLEN
// ARGV[14] -> "1" when the email came through a lane
// ARGV[15] -> the recipient's [HeldMarker] key, set when it is held
//
// Returns, followed by the breaker suffix: "allow:", "allow:replay" (either
// followed by ";<n>" when n earlier results of the email were ambiguous),
// "duplicate:sent", "expired:", "held:breaker", "shed:breaker",
// "shed:hold_full", "<terminal outcome>:replay", "deferred:claimed:<ms>",
// "deferred:relay:<ms>", "deferred:breaker:<ms>", "deferred:global:<ms>"
// or "deferred:domain:<ms>" (ms ≥ 1).
//
// Every decision but a replay is added to the recipient's [Trace] (an
// allowed attempt as "dispatched"), except a deferral that repeats the
// trace's newest entry.
func DispatchScript(kind string, c BreakerConfig) *redis.Script {
	return redis.NewScript(DispatchLua(kind, c))
}

// SettleLua returns the Lua of [SettleScript].
func SettleLua(kind string, c BreakerConfig) string {
	return render("settle.lua", kind, 0, c, map[string]string{"Kind": kind})
}

// SettleScript returns the settle script of one kind: it records the
// result of an allowed send attempt.
//
// "retry" (a temporary failure) releases the claim if it is still this
// attempt's, so a later attempt may send: it deletes it, or, when this or an
// earlier result was ambiguous (reason "ambiguous"), sets it to "m<n>" (n
// ambiguous results so far) until expires_at plus a margin, so that the next
// [DispatchScript] reports n; "sent", "failed" and "expired" make the claim
// terminal until expires_at plus a margin, unless it already is. Terminal states never change, so a re-sent script, or a second
// attempt that raced after a lost lease, counts nothing twice. A sent
// email is counted in its redemption bucket ([Redemption], and its source
// group in the bucket's HLL), and its claim keeps the bucket and the
// digests feedback needs (see [ClaimSent]).
//
// A recorded result that says something about the relay feeds the relay
// breaker: a failure counts towards RelayFailures consecutive failures and
// the window's failure ratio, and re-opens a half-open relay breaker; a
// success resets the consecutive count and closes a half-open relay
// breaker.
//
// KEYS[1] -> claim ([Claim])
// KEYS[2] -> the recipient's [Trace]
// --
// ARGV[1] -> claim value of this attempt ([AttemptValue])
// ARGV[2] -> "sent", "failed", "expired" or "retry"
// ARGV[3] -> reason ("" or a short token)
// ARGV[4] -> expires_at, unix ms
// ARGV[5] -> how long terminal claims outlive expires_at, ms
// ARGV[6] -> "1" to log a sent email (other results are always logged)
// ARGV[7] -> recipient hash for the log
// ARGV[8] -> email id
// ARGV[9] -> decision log MAXLEN
// ARGV[10] -> relay result: "f" (the relay failed), "s" (it answered) or ""
// ARGV[11] -> the email's digests: source, narrowest group ([NoGroup] if
// none) and recipient log, 9 bytes each ([Digest])
//
// A recorded result is added to the recipient's [Trace].
//
// Returns "recorded" when the result was counted, "noop" otherwise,
// followed by the breaker suffix.
func SettleScript(kind string, c BreakerConfig) *redis.Script {
	return redis.NewScript(SettleLua(kind, c))
}

// FeedbackLua returns the Lua of [FeedbackScript].
func FeedbackLua(kind string, logLen int, c BreakerConfig) string {
	return render("feedback.lua", kind, logLen, c, map[string]string{"Kind": kind})
}

// FeedbackScript returns the script that records feedback on one sent
// email of a kind. "confirm" (its link was redeemed) counts it in its
// redemption bucket and gives its source and group trust ([SourceTrust],
// [GroupTrust]: set once, refreshed after); "report" (the recipient did not
// ask for it) suppresses the recipient for the kind (the recipient log
// becomes "S<until>"), deletes the trust, counts it, and trips the breaker
// (reason reports) when the reports of the last two buckets reach
// ReportMin from ReportSources source groups and ReportRatio of what was
// sent. Each email takes one feedback: the claim's first byte becomes
// [ClaimConfirmed] or [ClaimReported].
//
// KEYS[1] -> claim ([Claim])
// --
// ARGV[1] -> "confirm" or "report"
// ARGV[2] -> email id
// ARGV[3] -> trust period, ms
// ARGV[4] -> how long a report suppresses the recipient, ms (0: not)
//
// Returns "confirmed", "reported" (followed by the breaker suffix when it
// tripped), "already" (feedback was given) or "unknown" (no sent email).
func FeedbackScript(kind string, logLen int, c BreakerConfig) *redis.Script {
	return redis.NewScript(FeedbackLua(kind, logLen, c))
}

// BounceTripLua returns the Lua of [BounceTripScript].
func BounceTripLua(kind string, c BreakerConfig) string {
	return render("bounces.lua", kind, 0, c, map[string]string{"Kind": kind,
		"MinSends": strconv.Itoa(max(c.BounceMinSends, 1)), "Ratio": num(c.BounceRatio), "ComplaintRatio": num(c.ComplaintRatio)})
}

// BounceTripScript returns the script run after a hard bounce or a
// complaint about an email of a kind was counted in [BounceBucket]: it
// trips the kind's relay breaker (dispatch defers until the cooldown ends,
// as for relay failures) when, over the last hour (the hour's bucket and
// the part of the one before still within the hour), at least
// BounceMinSends emails were sent and hard bounces reached BounceRatio of
// them or complaints ComplaintRatio.
//
// KEYS[1] -> the hour's [BounceBucket]
// KEYS[2] -> the hour before's [BounceBucket]
//
// Returns "counted", or "tripped" followed by the breaker suffix.
func BounceTripScript(kind string, c BreakerConfig) *redis.Script {
	return redis.NewScript(BounceTripLua(kind, c))
}

// ControlLua returns the Lua of [ControlScript].
func ControlLua(kind string, c BreakerConfig) string {
	return render("control.lua", kind, 0, c, map[string]string{"Kind": kind})
}

// ControlScript returns the script behind the admin API of one kind's
// breaker. It rolls the counting window over and applies the transitions
// that are due by time, so that a quiet kind shows its true state; "trip"
// then opens the breaker by hand (until reset: it does not turn half-open
// by time), "reset" closes it and clears its counts, its budget use, its
// relay counters and its cooldown doublings.
//
// KEYS[1] -> [Breaker] (declared so that a cluster client sends it to the
// guard's node)
// --
// ARGV[1] -> "state", "trip" or "reset"
// ARGV[2] -> reason code for trip: "s", "f", "r" or "m"
//
// Returns {state code, reason code, since ms, opened ms, rate (req/s),
// baseline (req/s), held, until ms, threshold (per window), level,
// releasing, ceiling (per window), budget (per period), budget used,
// learned redemption share (-1 until established), warming up ("1"/"0"),
// lane interval µs, born ms} followed by one transition record per
// transition (see [BreakerConfig]).
func ControlScript(kind string, c BreakerConfig) *redis.Script {
	return redis.NewScript(ControlLua(kind, c))
}

// ReleaseLua returns the Lua of [ReleaseScript].
func ReleaseLua(c AdmitConfig) string {
	checkKind(c.Kind)
	return render("release.lua", c.Kind, c.LogLen, c.Breaker, c.data())
}

// ReleaseScript returns the script that handles one email of a kind's
// [Held] hash for a release, a dry run or a purge. It finds the lane the
// email would pass now: "trusted" (its request carried a trust signal),
// "redeemed" (its source or group earned trust before the breaker opened)
// or "rerequest" (its recipient asked again while it was held).
//
//   - dry: nothing changes; the reply names the lane, "none", "expired" or
//     "superseded";
//   - purge: counted shed, reason "purged";
//   - invalid (the payload cannot be decoded): counted failed, "payload";
//   - release (lanes only) and all: an expired email is counted expired
//     (reason held); one superseded by a later admission to its recipient
//     is counted duplicate (superseded); release keeps one without a lane
//     held ("kept:"); otherwise an email held at dispatch is in flight
//     again (its "held" claim is deleted), and one held at admission is
//     admitted again with suppression, the dedup window and the
//     per-recipient windows (it used no recipient quota; its source's
//     quota it used when held): a refusal is counted as that outcome, an
//     admission writes the recipient log and is counted in [Admitted].
//
// Every outcome but a dry run's is added to the recipient's [Trace].
//
// A released email is moved to [Releasing]; the caller enqueues it and
// then removes it from there. The held outcome is uncounted in [Stats] and
// the email's new fate counted instead, so each request keeps exactly one
// terminal outcome or is in flight again.
//
// KEYS[1] -> recipient log ([Recipient] or [Account]; any key for purge/invalid)
// KEYS[2] -> suppression ([Suppression]; likewise)
// KEYS[3] -> claim ([Claim])
// KEYS[4] -> source log ([Source]), whose [SourceTrust] is read
// KEYS[5] -> the narrowest [Group] log, whose [GroupTrust] is read, or [None]
// KEYS[6] -> the recipient's [Trace], or [None] (payload not readable)
// --
// ARGV[1] -> email tag ([EmailTag])
// ARGV[2] -> email id
// ARGV[3] -> "release", "all", "dry", "purge" or "invalid"
// ARGV[4] -> recipient hash for the log
// ARGV[5] -> the email's trust signal, or ""
//
// Returns "gone:" (not held any more), "kept:", "dry:<lane|none|expired|
// superseded>", "queued:<lane>" (moved to [Releasing]; lane "" for one
// released by "all" without a lane), "shed:purged", "failed:payload",
// "expired:held", "duplicate:superseded" or the refusal
// "<outcome>:<reason>".
func ReleaseScript(c AdmitConfig) *redis.Script { return redis.NewScript(ReleaseLua(c)) }

// SweepLua returns the Lua of [SweepScript].
func SweepLua(kind string, c BreakerConfig) string {
	return render("sweep.lua", kind, 0, c, map[string]string{"Kind": kind})
}

// SweepScript returns the script that takes the expired emails out of a
// batch of a kind's [Held] hash (one HSCAN step), counting each expired
// (reason held) instead of held.
//
// KEYS[1] -> [Held]
// --
// ARGV[1] -> HSCAN cursor
// ARGV[2] -> HSCAN count
//
// Returns {next cursor, emails swept}.
func SweepScript(kind string, c BreakerConfig) *redis.Script {
	return redis.NewScript(SweepLua(kind, c))
}
