#!/usr/bin/env bash
# Minimal workflow check against a running VramCram server: health, the model
# list, one job followed to its result, a job's status, a cancel, and the
# loaded models. Prints one line per check; exits 0 when all pass, 1 at the
# first failure.
#
# Environment:
#   VRAMCRAM_URL      server address (default http://127.0.0.1:8000)
#   VRAMCRAM_API_KEY  Bearer key, if the server has server.api_keys
#   VRAMCRAM          the vramcram binary (default: in PATH, else ./bin/vramcram)
#   MODEL             LLM to use (default: the first LLM that is not unavailable)
#   TIMEOUT           how long a job may take, loading included (default 300s)
set -euo pipefail

URL=${VRAMCRAM_URL:-http://127.0.0.1:8000}
export VRAMCRAM_URL=$URL
TIMEOUT=${TIMEOUT:-300s}
VC=${VRAMCRAM:-$(command -v vramcram || echo ./bin/vramcram)}

pass() { printf 'PASS  %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*" >&2; exit 1; }

command -v curl >/dev/null || fail "curl is not installed"
[ -x "$VC" ] || fail "no vramcram binary at $VC (set VRAMCRAM or run make build)"

# 1. The server answers and is healthy (/health needs no key).
health=$(curl -sS --max-time 10 "$URL/health") || fail "health: GET $URL/health: server not reachable"
case $health in
  *'"status":"healthy"'*) pass "health: $URL is healthy" ;;
  *) fail "health: $health" ;;
esac

# 2. The model list, and an LLM to use.
models=$("$VC" models) || fail "vramcram models"
if [ -z "${MODEL:-}" ]; then
  MODEL=$(awk 'NR > 1 && $2 == "llm" && $3 != "unavailable" { print $1; exit }' <<<"$models")
fi
[ -n "$MODEL" ] || fail "no usable LLM in the model list:"$'\n'"$models"
pass "models: $(($(wc -l <<<"$models") - 1)) configured, using $MODEL"

# 3. One job, followed to its result.
text=$("$VC" submit -m "$MODEL" --wait -q --timeout "$TIMEOUT" --max-tokens 16 "Say hello in five words.") ||
  fail "submit --wait to $MODEL"
[ -n "$text" ] || fail "the job's result is empty"
pass "job on $MODEL completed: ${text:0:60}"

# 4. A job submitted without waiting, its status, and a cancel (a job that
# finished first answers already_finished, which is fine too).
id=$("$VC" submit -m "$MODEL" --max-tokens 64 "Count from one to fifty.") || fail "submit to $MODEL"
"$VC" status "$id" >/dev/null || fail "status $id"
if out=$("$VC" cancel "$id" 2>&1); then
  pass "cancel: $out"
else
  case $out in
    *already_finished*) pass "cancel: $id had already finished" ;;
    *) fail "cancel $id: $out" ;;
  esac
fi
status=$("$VC" status --json "$id") || fail "status $id"
case $status in
  *'"status":"cancelled"'* | *'"status":"completed"'*) pass "status: $id is final" ;;
  *) fail "status of $id after cancel: $status" ;;
esac

# 5. The model is loaded (unless another workload evicted it meanwhile).
ps=$("$VC" ps) || fail "vramcram ps"
pass "ps: $(grep -c . <<<"$ps") lines; $(tail -n 1 <<<"$ps")"
echo "smoke test passed"
