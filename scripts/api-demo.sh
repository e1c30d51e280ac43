#!/usr/bin/env bash
# A tour of VramCram's HTTP API with curl: every request is printed, then its
# answer. Runs against a running server and leaves nothing behind but two
# finished jobs.
#
# Usage: scripts/api-demo.sh [MODEL]
#
# Environment:
#   VRAMCRAM_URL      server address (default http://127.0.0.1:8000)
#   VRAMCRAM_API_KEY  Bearer key, if the server has server.api_keys
#   MODEL             LLM to use (default: the first LLM that is not unavailable)
#   TIMEOUT           seconds a job may take, loading included (default 300)
# jq, when installed, pretty-prints the answers.
set -euo pipefail

URL=${VRAMCRAM_URL:-http://127.0.0.1:8000}
URL=${URL%/}
case $URL in *://*) ;; *) URL=http://$URL ;; esac
TIMEOUT=${TIMEOUT:-300}
auth=()
[ -n "${VRAMCRAM_API_KEY:-}" ] && auth=(-H "Authorization: Bearer $VRAMCRAM_API_KEY")

command -v curl >/dev/null || { echo "api-demo: curl is not installed" >&2; exit 1; }
pretty() { if command -v jq >/dev/null; then jq . 2>/dev/null || cat; else cat; echo; fi; }
# field NAME: the first string value of "NAME" in the JSON on stdin.
field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" | head -n 1; }

# call METHOD PATH [BODY]: print the request and the answer; the answer's
# body is kept in $body and its status in $code.
call() {
  local method=$1 path=$2 data=${3:-}
  printf '\n$ curl -X %s %s%s' "$method" "$URL" "$path"
  [ -n "$data" ] && printf " -d '%s'" "$data"
  printf '\n'
  local args=(-sS -X "$method" -w '\n%{http_code}' "${auth[@]}")
  [ -n "$data" ] && args+=(-H 'Content-Type: application/json' -d "$data")
  local out
  out=$(curl "${args[@]}" "$URL$path") || { echo "api-demo: $URL is not reachable" >&2; exit 1; }
  code=${out##*$'\n'}
  body=${out%$'\n'*}
  printf 'HTTP %s\n' "$code"
  pretty <<<"$body"
}

want() { [ "$code" = "$1" ] || { echo "api-demo: expected HTTP $1, got $code" >&2; exit 1; }; }

echo "# 1. Health: the VRAM ledger and what is loaded (no key needed)"
call GET /health
want 200

echo; echo "# 2. Configured models, their state and VRAM figures"
call GET /models
want 200
MODEL=${MODEL:-${1:-}}
if [ -z "$MODEL" ]; then
  # The first model of type llm whose state is not unavailable.
  MODEL=$(tr '{' '\n' <<<"$body" | grep '"type":"llm"' | grep -v '"state":"unavailable"' | field name)
fi
[ -n "$MODEL" ] || { echo "api-demo: no usable LLM" >&2; exit 1; }

echo; echo "# 3. Submit a job: 202 once it is on disk"
call POST /jobs "{\"model\":\"$MODEL\",\"prompt\":\"Name three colours.\",\"params\":{\"max_tokens\":24}}"
want 202
id=$(field job_id <<<"$body")

echo; echo "# 4. Follow it: queued (with its queue position), running (with progress), completed"
deadline=$((SECONDS + TIMEOUT))
while :; do
  out=$(curl -sS "${auth[@]}" "$URL/jobs/$id")
  status=$(field status <<<"$out")
  printf '  %s\n' "$out"
  case $status in completed | failed | cancelled) break ;; esac
  [ $SECONDS -lt $deadline ] || { echo "api-demo: job $id still $status after ${TIMEOUT}s" >&2; exit 1; }
  sleep 0.5
done
[ "$status" = completed ] || { echo "api-demo: job $id $status" >&2; exit 1; }

echo; echo "# 5. Its result"
call GET "/jobs/$id/result"
want 200

echo; echo "# 6. The event stream (SSE) while a second job runs"
printf '\n$ curl -N %s/events\n' "$URL"
events_file=$(mktemp)
trap 'rm -f "$events_file"' EXIT
curl -s -N --max-time 60 "${auth[@]}" "$URL/events" >"$events_file" &
events=$!
for _ in $(seq 100); do grep -q '^: connected' "$events_file" && break; sleep 0.1; done
id2=$(curl -sS "${auth[@]}" -H 'Content-Type: application/json' \
  -d "{\"model\":\"$MODEL\",\"prompt\":\"Say hi.\",\"params\":{\"max_tokens\":8}}" "$URL/jobs" | field job_id)
deadline=$((SECONDS + TIMEOUT))
until grep "$id2" "$events_file" | grep -q '"type":"job_finished"'; do
  [ $SECONDS -lt $deadline ] || break
  sleep 0.2
done
kill "$events" 2>/dev/null || true
wait "$events" 2>/dev/null || true
sed -n 's/^data: /  /p' "$events_file"

echo; echo "# 7. Recent jobs of the model, newest first"
call GET "/jobs?model=$MODEL&limit=2"
want 200

echo; echo "# 8. Errors have a stable code and a message naming the field"
call POST /jobs '{"model":"no-such-model","prompt":"x"}'
want 404
call POST /jobs "{\"model\":\"$MODEL\",\"prompt\":\"x\",\"params\":{\"temperature\":9}}"
want 400
call DELETE "/jobs/$id"
want 409

echo; echo "api demo done"
