#!/usr/bin/env bash
# sink-ingest.sh: how fast cmd/smtpsink takes mail, compared with postfix's
# smtp-sink, both driven by postfix's smtp-source in the same run.
#
# smtpsink stores every message and verifies its DKIM signatures; smtp-sink
# reads and discards. Two message scenarios:
#   signed    every message carries an RSA-2048 relaxed/relaxed DKIM signature
#             (made once with python3-dkim, sent with smtp-source -F), so each
#             one costs smtpsink a full verification, which must pass
#   unsigned  smtp-source's own messages (-l LENGTH): without a DKIM-Signature
#             smtpsink records "none" and skips the verifier
# in two connection shapes:
#   fresh     smtp-source -s SESSIONS: a new connection for every message
#   reused    smtp-source -s REUSED_SESSIONS -d: each session sends its share
#             of the messages over one connection (the shape of a pooled
#             client such as floodgate's worker)
# Rounds alternate the targets and the medians are compared: the ratio is
# smtpsink's messages per second over smtp-sink's.
#
# Usage: bench/sink-ingest.sh
# Env:   SESSIONS (20) REUSED_SESSIONS (10) MESSAGES (20000) LENGTH (2048)
#        ROUNDS (3) SHAPES ("fresh reused") SCENARIOS ("signed unsigned")
#        SINK_GOMAXPROCS (unset: smtpsink's default, -procs 1) for smtpsink;
#        smtp-sink is single-threaded, so 1 compares the two on one core each
#        SMTPSINK (unset: built from ./cmd/smtpsink) a smtpsink binary to run
#        SMTP_SOURCE (/usr/sbin/smtp-source) SMTP_SINK (/usr/sbin/smtp-sink)
#        PYTHON (/usr/bin/python3, with the dkim module)
set -euo pipefail

SESSIONS=${SESSIONS:-20}
REUSED_SESSIONS=${REUSED_SESSIONS:-10}
SHAPES=${SHAPES:-fresh reused}
SCENARIOS=${SCENARIOS:-signed unsigned}
MESSAGES=${MESSAGES:-20000}
LENGTH=${LENGTH:-2048}
ROUNDS=${ROUNDS:-3}
SMTP_SOURCE=${SMTP_SOURCE:-/usr/sbin/smtp-source}
SMTP_SINK=${SMTP_SINK:-/usr/sbin/smtp-sink}
PYTHON=${PYTHON:-/usr/bin/python3}

cd "$(dirname "$0")/.."

for tool in "$SMTP_SOURCE" "$SMTP_SINK" openssl curl; do
	command -v "$tool" >/dev/null || { echo "sink-ingest: $tool not found (Debian: apt-get install postfix openssl curl)" >&2; exit 1; }
done
"$PYTHON" -c 'import dkim' 2>/dev/null || { echo "sink-ingest: $PYTHON lacks the dkim module (python3-dkim)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

free_port() {
	"$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

sink_bin=${SMTPSINK:-}
if [[ -z $sink_bin ]]; then
	echo "building cmd/smtpsink" >&2
	go build -o "$work/smtpsink" ./cmd/smtpsink
	sink_bin=$work/smtpsink
fi

# A key, its record, and one signed message of about LENGTH bytes of body.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/rsa.pem" 2>/dev/null
pub=$(openssl pkey -in "$work/rsa.pem" -pubout -outform DER | base64 -w0)
echo "bench._domainkey.example.org v=DKIM1; k=rsa; p=$pub" >"$work/keys.txt"
"$PYTHON" - "$work/rsa.pem" "$work/signed.eml" "$LENGTH" <<'EOF'
import sys, dkim
key = open(sys.argv[1], "rb").read()
length = int(sys.argv[3])
line = b"x" * 76
body = b"".join(b"%04d" % i + line[4:] + b"\r\n" for i in range(max(1, length // 78)))
msg = (b"From: Bench <bench@example.org>\r\n"
       b"To: user@example.com\r\n"
       b"Subject: sink ingest bench\r\n"
       b"Date: Fri, 27 Nov 2026 06:00:00 +0000\r\n"
       b"Message-ID: <bench@example.org>\r\n"
       b"MIME-Version: 1.0\r\n"
       b"Content-Type: text/plain; charset=us-ascii\r\n"
       b"\r\n" + body)
sig = dkim.sign(msg, b"bench", b"example.org", key,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=[b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type"])
# smtp-source -F appends CRLF to each line of the file.
open(sys.argv[2], "wb").write((sig + msg).replace(b"\r\n", b"\n"))
EOF

sink_smtp=$(free_port)
sink_http=$(free_port)
pf_port=$(free_port)

sink_env=()
[[ -n ${SINK_GOMAXPROCS:-} ]] && sink_env=("GOMAXPROCS=$SINK_GOMAXPROCS")
env "${sink_env[@]}" "$sink_bin" -smtp "127.0.0.1:$sink_smtp" -http "127.0.0.1:$sink_http" \
	-dkim-keys "$work/keys.txt" >"$work/smtpsink.out" 2>"$work/smtpsink.err" &
sink_pid=$!
pids+=("$sink_pid")
pf_args=()
[[ $(id -u) == 0 ]] && pf_args=(-u nobody)
"$SMTP_SINK" "${pf_args[@]}" "127.0.0.1:$pf_port" 256 >"$work/smtp-sink.out" 2>&1 &
pf_pid=$!
pids+=("$pf_pid")
tck=$(getconf CLK_TCK)

api="http://127.0.0.1:$sink_http/api"
for _ in $(seq 100); do
	curl -fs "$api/stats" >/dev/null 2>&1 && break
	sleep 0.1
done
curl -fs "$api/stats" >/dev/null || { echo "sink-ingest: smtpsink did not start" >&2; cat "$work/smtpsink.err" >&2; exit 1; }

received() { curl -fs "$api/stats" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["received"])'; }

# cpu PID prints the process's user+system CPU time in clock ticks.
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# run TARGET PORT PID SOURCE-ARGS... prints messages per second and the
# target's CPU microseconds per message.
run() {
	local target=$1 port=$2 pid=$3
	shift 3
	local before=0 t0 t1 c0 c1
	[[ $target == smtpsink ]] && before=$(received)
	c0=$(cpu "$pid")
	t0=$(date +%s.%N)
	"$SMTP_SOURCE" -m "$MESSAGES" "$@" "127.0.0.1:$port"
	t1=$(date +%s.%N)
	c1=$(cpu "$pid")
	if [[ $target == smtpsink ]]; then
		local got=$(($(received) - before))
		if ((got != MESSAGES)); then
			echo "sink-ingest: smtpsink stored $got messages, want $MESSAGES" >&2
			exit 1
		fi
	fi
	awk -v m="$MESSAGES" -v a="$t0" -v b="$t1" -v c="$((c1 - c0))" -v hz="$tck" \
		'BEGIN { printf "%.0f %.0f\n", m / (b - a), c / hz * 1e6 / m }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

declare -A rates cpus
for shape in $SHAPES; do
	if [[ $shape == fresh ]]; then
		conn=(-s "$SESSIONS")
	else
		conn=(-s "$REUSED_SESSIONS" -d)
	fi
	for scenario in $SCENARIOS; do
		if [[ $scenario == signed ]]; then
			src=(-F "$work/signed.eml")
		else
			src=(-l "$LENGTH")
		fi
		for round in $(seq "$ROUNDS"); do
			order=(smtpsink postfix)
			((round % 2 == 0)) && order=(postfix smtpsink)
			for target in "${order[@]}"; do
				port=$sink_smtp pid=$sink_pid
				[[ $target == postfix ]] && port=$pf_port pid=$pf_pid
				out=$(run "$target" "$port" "$pid" "${conn[@]}" "${src[@]}")
				read -r r c <<<"$out"
				echo "$shape $scenario round $round $target: $r msg/s, $c CPU us/msg" >&2
				rates[$shape.$scenario.$target]+="$r "
				cpus[$shape.$scenario.$target]+="$c "
			done
		done
		if [[ $scenario == signed ]]; then
			# The last stored message must have passed verification.
			curl -fs "$api/messages?limit=1" | "$PYTHON" -c '
import json, sys
m = json.load(sys.stdin)[0]
r = [d["result"] for d in m["dkim"]]
sys.exit(0 if r == ["pass"] else "sink-ingest: signed message DKIM results %s, want [pass]" % r)'
		fi
	done
done

echo
echo "smtp-source -m $MESSAGES, $LENGTH-byte messages; fresh: -s $SESSIONS, one connection per message;"
echo "reused: -s $REUSED_SESSIONS -d, one connection per session; median of $ROUNDS rounds"
echo "$(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); smtpsink GOMAXPROCS=${SINK_GOMAXPROCS:-1 (-procs default)}"
printf '%-7s %-9s %15s %15s %7s   %s\n' shape scenario "smtpsink msg/s" "smtp-sink msg/s" ratio "CPU us/msg smtpsink / smtp-sink"
med() { tr ' ' '\n' <<<"$1" | grep . | median; }
for shape in $SHAPES; do
	for scenario in $SCENARIOS; do
		k=$shape.$scenario
		awk -v sh="$shape" -v s="$scenario" -v o="$(med "${rates[$k.smtpsink]}")" -v t="$(med "${rates[$k.postfix]}")" \
			-v co="$(med "${cpus[$k.smtpsink]}")" -v ct="$(med "${cpus[$k.postfix]}")" \
			'BEGIN { printf "%-7s %-9s %15.0f %15.0f %7.2f   %.0f / %.0f\n", sh, s, o, t, o / t, co, ct }'
	done
done
