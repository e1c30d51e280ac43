#!/usr/bin/env bash
# LLM-to-image workflow against a running VramCram server: an LLM writes an
# image prompt about SUBJECT (its tokens shown as they come), then a diffusion
# model draws it (its steps shown as they come; sd-server models publish
# none). VramCram loads, evicts and swaps the two models as the VRAM budget
# requires.
#
# Usage: scripts/llm-to-image.sh [SUBJECT]
#
# Environment:
#   VRAMCRAM_URL      server address (default http://127.0.0.1:8000)
#   VRAMCRAM_API_KEY  Bearer key, if the server has server.api_keys
#   VRAMCRAM          the vramcram binary (default: in PATH, else ./bin/vramcram)
#   LLM_MODEL         the LLM (default: the first LLM that is not unavailable)
#   IMAGE_MODEL       the diffusion model (default: the first usable one)
#   OUT               image file (default llm-to-image-YYYYmmdd-HHMMSS.png)
#   MAX_TOKENS        length limit of the written prompt (default 120)
#   TIMEOUT           how long each job may take, loading included (default 600s)
set -euo pipefail

export VRAMCRAM_URL=${VRAMCRAM_URL:-http://127.0.0.1:8000}
VC=${VRAMCRAM:-$(command -v vramcram || echo ./bin/vramcram)}
SUBJECT=${1:-a lighthouse on a cliff at dusk}
OUT=${OUT:-llm-to-image-$(date +%Y%m%d-%H%M%S).png}
TIMEOUT=${TIMEOUT:-600s}

die() { printf 'llm-to-image: %s\n' "$*" >&2; exit 1; }
[ -x "$VC" ] || die "no vramcram binary at $VC (set VRAMCRAM or run make build)"

models=$("$VC" models) || exit 1
pick() { awk -v t="$1" 'NR > 1 && $2 == t && $3 != "unavailable" { print $1; exit }' <<<"$models"; }
LLM_MODEL=${LLM_MODEL:-$(pick llm)}
IMAGE_MODEL=${IMAGE_MODEL:-$(pick diffusion)}
[ -n "$LLM_MODEL" ] || die "no usable LLM; vramcram models says:"$'\n'"$models"
[ -n "$IMAGE_MODEL" ] || die "no usable diffusion model; vramcram models says:"$'\n'"$models"

start=$(date +%s)
printf '== 1/2  %s writes an image prompt about: %s\n' "$LLM_MODEL" "$SUBJECT" >&2
# --stream: the text is shown token by token. Its stdout and stderr share one
# pipe, so the text and the progress lines reach the terminal in the order
# they were written; the text itself is then read back from the server.
log=$("$VC" submit -m "$LLM_MODEL" --wait --stream --timeout "$TIMEOUT" --max-tokens "${MAX_TOKENS:-120}" \
  "Describe, in one vivid sentence of at most 60 words, a picture of $SUBJECT. Reply with the sentence only." 2>&1 |
  tee /dev/stderr) || die "the LLM job failed"
id=$(sed -n 's/^job \([^ ]*\) queued for .*/\1/p' <<<"$log" | head -n 1)
[ -n "$id" ] || die "no job id in the output of vramcram submit"
prompt=$("$VC" result "$id") || die "cannot read the result of job $id"
prompt=$(tr '\n' ' ' <<<"$prompt" | sed -e 's/^[[:space:]"]*//' -e 's/[[:space:]"]*$//')
[ -n "$prompt" ] || die "the LLM wrote an empty prompt"

printf '\n== 2/2  %s draws it\n' "$IMAGE_MODEL" >&2
files=$("$VC" submit -m "$IMAGE_MODEL" --wait --timeout "$TIMEOUT" -o "$OUT" -- "$prompt") || die "the image job failed"

printf '\n== done in %ss\n' "$(($(date +%s) - start))" >&2
printf 'prompt: %s\n' "$prompt"
while IFS= read -r f; do
  [ -s "$f" ] || die "image file $f is missing or empty"
  printf 'image:  %s (%s bytes)\n' "$f" "$(wc -c <"$f" | tr -d ' ')"
done <<<"$files"
