#!/usr/bin/env bash
# GPU checks for a machine with an NVIDIA driver; runs in under 5 minutes.
#
#   scripts/gpu-check.sh            build (if Go is here) and run every check
#   make gpu-bin                    prebuild into .gpu-bin/ on a machine with Go,
#                                   for a GPU machine without it
#
# 1. The NVML-tagged tests of vram/ on the real driver (a PyTorch process
#    holding memory must be listed by PID and its memory must come back).
# 2. VramCram with stand-in engines that really hold GPU memory (each engine
#    starts scripts/gpu-hold.py in its process group): the measured figure
#    replaces the configured one in GET /models, the second model evicts the
#    first and loads only after its memory is back, the GPU never holds both,
#    and the learned figure survives a restart.
# Needs: nvidia-smi, python3 with torch (CUDA), curl.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$(mktemp -d)}
BIN=${BIN:-$ROOT/.gpu-bin}
PORT=${PORT:-18765}
HOLD_MB=${HOLD_MB:-3000}
fail=0
step() { printf '\n== %s\n' "$*"; }
ok() { printf 'PASS: %s\n' "$*"; }
bad() { printf 'FAIL: %s\n' "$*"; fail=1; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

step "device"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'

if command -v go >/dev/null; then
  step "build with cgo (NVML)"
  export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.27.3} CGO_CFLAGS=${CGO_CFLAGS:-"-O2 -g -Wno-deprecated-declarations"}
  make -s gpu-bin
fi
for f in vramcram testengine vram-nvml.test; do
  [[ -x $BIN/$f ]] || { echo "missing $BIN/$f: run make gpu-bin on a machine with Go"; exit 2; }
done

step "NVML tests on the real driver"
if (cd vram && GPU_TEST_CMD="python3 $ROOT/scripts/gpu-hold.py 512" timeout 120 "$BIN/vram-nvml.test" -test.v -test.count=1 -test.run 'GPU'); then
  ok "NVML tests"
else
  bad "NVML tests"
fi

step "VramCram with GPU-holding stand-in engines"
read -r TOTAL USED < <(nvidia-smi --query-gpu=memory.total,memory.used --format=csv,noheader,nounits -i 0 | tr -d ',')
ROOM=$(( HOLD_MB * 3 / 2 + 1500 ))         # one engine fits, two do not
MARGIN=$(( TOTAL - USED - ROOM ))
echo "total ${TOTAL} MiB, used before ${USED} MiB; budget leaves ${ROOM} MiB for models (safety margin ${MARGIN} MiB)"
mkdir -p "$OUT/data"
: > "$OUT/model.gguf"
cat > "$OUT/config.yaml" <<YAML
server: {host: 127.0.0.1, port: $PORT}
storage: {data_dir: $OUT/data}
vram: {total_mb: $TOTAL, safety_margin_mb: $MARGIN, monitoring_interval_seconds: 1, release_timeout_seconds: 30}
inference: {llama_server_path: $BIN/testengine}
logging: {level: debug, format: json}
models:
  llm:
    - name: gpu-a
      model_path: $OUT/model.gguf
      vram_mb: 1024
      config: {parallel: 1, extra_args: [--test-gpu-mb, "$HOLD_MB", --test-gpu-helper, $ROOT/scripts/gpu-hold.py]}
    - name: gpu-b
      model_path: $OUT/model.gguf
      vram_mb: $(( HOLD_MB + 1000 ))
      config: {parallel: 1, extra_args: [--test-gpu-mb, "$HOLD_MB", --test-gpu-helper, $ROOT/scripts/gpu-hold.py]}
YAML
URL=http://127.0.0.1:$PORT
start() { "$BIN/vramcram" serve -config "$OUT/config.yaml" >>"$OUT/vramcram.log" 2>&1 & VC=$!; for _ in $(seq 100); do curl -sf "$URL/health" >/dev/null && return; sleep 0.1; done; echo "server did not start"; tail -20 "$OUT/vramcram.log"; exit 1; }
run_job() {
  local id; id=$(curl -sf -X POST "$URL/jobs" -d "{\"model\":\"$1\",\"prompt\":\"hello gpu\"}" | json 'd["job_id"]')
  for _ in $(seq 600); do
    st=$(curl -sf "$URL/jobs/$id" | json 'd["status"]')
    [[ $st == completed || $st == failed || $st == cancelled ]] && { echo "$1 job $id: $st"; [[ $st == completed ]]; return; }
    sleep 0.1
  done
  echo "$1 job $id: timed out"; return 1
}
model() { curl -sf "$URL/models" | json "[m for m in d['models'] if m['name']=='$1'][0]$2"; }

( while sleep 0.1; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0; done ) > "$OUT/used.txt" 2>/dev/null & SAMPLER=$!
trap 'kill $SAMPLER ${VC:-} 2>/dev/null || true' EXIT
start
run_job gpu-a || bad "gpu-a job"
sleep 2.5 # two meter intervals
measured=$(model gpu-a "['vram_measured_mb']"); reserved=$(model gpu-a "['vram_reserved_mb']")
echo "gpu-a: configured 1024 MiB, measured ${measured} MiB, reserved ${reserved} MiB"
(( measured >= HOLD_MB )) && (( reserved == measured )) && ok "measured per-process VRAM replaces the configured figure" || bad "measured VRAM not in /models"
run_job gpu-b || bad "gpu-b job"
state_a=$(model gpu-a "['state']")
[[ $state_a == unloaded ]] && ok "gpu-a evicted for gpu-b" || bad "gpu-a is $state_a, want unloaded"
grep -q "waited for evicted engines' VRAM" "$OUT/vramcram.log" && ok "the load of gpu-b waited for gpu-a's memory: $(grep -o '"seconds":[0-9.e-]*' "$OUT/vramcram.log" | tail -1)" || bad "no verified release in the log"
grep -q vram_release_timeout "$OUT/vramcram.log" && bad "release timed out" || true
peak=$(sort -n "$OUT/used.txt" | tail -1)
echo "GPU memory used: before ${USED} MiB, peak ${peak} MiB, limit $(( USED + ROOM )) MiB"
(( peak <= USED + ROOM )) && ok "the GPU never held both engines" || bad "peak ${peak} MiB over the budget"
kill -TERM $VC; wait $VC || true
start
learned=$(model gpu-a "['vram_learned_mb']")
(( learned >= HOLD_MB )) && ok "learned figure survives a restart (${learned} MiB)" || bad "learned figure lost (${learned})"
kill -TERM $VC; wait $VC || true; VC=
sleep 1
left=$(nvidia-smi --query-compute-apps=pid --format=csv,noheader | wc -l)
(( left == 0 )) && ok "no GPU process left after shutdown" || bad "$left GPU processes left"
step "result"; [[ $fail == 0 ]] && echo "ALL PASS" || echo "SOME CHECKS FAILED (log: $OUT/vramcram.log)"
exit $fail
