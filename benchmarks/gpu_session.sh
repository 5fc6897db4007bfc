#!/usr/bin/env bash
# One lease of the GPU machine (15 min in all): the GPU runs of issues 3, 4 and 7, prepared here.
#
#   bash benchmarks/gpu_session.sh setup     # wheels, versions, a 2-step GPU smoke run, image caches
#   bash benchmarks/gpu_session.sh launch    # every training chain at once, detached (setsid)
#   bash benchmarks/gpu_session.sh collect   # snapshots into $OUT until the chains end or LIMIT s;
#                                            # then stops what still runs (SIGTERM: checkpoints kept)
#   bash benchmarks/gpu_session.sh throughput  # issue 5's gpu_throughput.py on the idle GPU
#
# The data travels packed, one file (thousands of small ones count as more than their bytes
# against a call's 64 MiB), made here with benchmarks/pack_for_device.py:
#   python benchmarks/pack_for_device.py ../shared/data/comp5329-dev .gpu/comp5329 --size 128 --rows 12000
#   python benchmarks/pack_for_device.py ../shared/data/matching-dev .gpu/matching --size 64
#   .gpu/wv/seed{0,1}/: the FastText cache (word_vectors/) of best_gpu's text stage, trained here:
#   gensim stays home (its wheel alone is 28 MB of the 64 MiB a call may carry)
#   tar czf .gpuc/data.tgz .gpu          # .gpu/ and .gpuc/ are in .git/info/exclude, never committed
# Calls as run in session 4 (benchmarks/RESULTS.md), carrying .whl (the wheels missing there) and .gpuc:
#   run 1: bash benchmarks/gpu_session.sh setup && bash benchmarks/gpu_session.sh launch
#   run 2 (at once, carrying nothing new): LIMIT=<s> bash benchmarks/gpu_session.sh collect
# TINY=1 shrinks every run to 2 steps (a dry run of this script on the CPU).
set -u
MODE=${1:?setup|launch|jobs|collect|throughput}
PY=${PY:-python3}
OUT=${OUT:-/tmp/gpu_out}
R=${RUNS:-/tmp/gpu_runs}
mkdir -p "$OUT" "$R/logs" "$R/evals"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 JAXMM_CACHE="$R/cache"
export XLA_PYTHON_CLIENT_MEM_FRACTION=${MEMFRAC:-0.06}  # a dozen processes share one GPU
if [ -d /tmp/site ]; then export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}; fi
# A call's working-tree copy deletes ignored paths it does not carry (measured: the data unpacked
# into the repo by one call was gone for the next), so the data lives outside the repo there.
if [ -f .gpuc/data.tgz ]; then DATA=${DATA:-$R/data}; else DATA=${DATA:-.gpu}; fi
export C=$DATA/comp5329 M=$DATA/matching
COMMON=(--config.train.progress_bar=False)
if [ "${TINY:-0}" = 1 ]; then COMMON+=(--config.train.max_steps=2 --config.train.epochs=1); fi
now() { date +%s; }

log_step() { echo "$(date +%T) $*" >> "$R/status.txt"; }

train() {  # name config args...: one train.py run in $R/name (or $WD), logged; its exit status
  local name=$1 config=$2; shift 2
  log_step "start $name"
  $PY train.py --config "configs/$config.py" --workdir "${WD:-$R/$name}" "${COMMON[@]}" "$@" \
    > "$R/logs/$name.log" 2>&1
  local rc=$?
  log_step "end $name rc=$rc"
  return $rc
}

evaluate_heldout() {  # name: held-out records 10000..11999 of the dev train.csv
  log_step "start eval $1"
  $PY evaluate.py --workdir "$R/$1" --csv "$C/train.csv" --rows 10000: \
    --out "$R/evals/$1.json" > "$R/logs/eval_$1.log" 2>&1
  log_step "end eval $1 rc=$?"
}

snapshot() {  # everything small the runs wrote -> $OUT/results.tgz (atomic)
  (cd "$R" && find . -path ./cache -prune -o -type f \
      \( -name '*.jsonl' -o -name '*.json' -o -name '*.md' -o -name '*.log' -o -name '*.txt' \
         -o -name '*.csv' -o -name 'reconstructions.png' \) -print0 \
     | tar --null -czf "$OUT/results.tmp.tgz" -T - 2>/dev/null)
  mv "$OUT/results.tmp.tgz" "$OUT/results.tgz"
}

case $MODE in
setup)
  # Thousands of small files count as more than their bytes against a call's 64 MiB: one tar.
  if [ -f .gpuc/data.tgz ] && [ ! -d "$C" ]; then
    mkdir -p "$DATA" && tar xzf .gpuc/data.tgz -C "$DATA" --strip-components=1 || exit 1
  fi
  if ! $PY -c "import grain, ml_collections, nltk, tensorboardX" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && touch /tmp/site/.ok || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  { nvidia-smi -L; nproc; free -g | head -2; } 2>&1 | tee "$R/machine.txt"
  $PY -c "import sys, jax, flax, optax, orbax.checkpoint as oc, grain, ml_collections, nltk, PIL
print(sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__,
      'orbax', oc.__version__, 'pillow', PIL.__version__, jax.devices())" 2>&1 | tee -a "$R/machine.txt" || exit 1
  # A 2-step run of the tiny config: the whole train path on this machine's jax/flax.
  t=$(now)
  $PY train.py --config configs/tiny.py --workdir "$R/smoke" --config.data.root="$R/smoke_data" \
    --config.train.max_steps=2 --config.train.progress_bar=False > "$R/logs/smoke.log" 2>&1
  rc=$?; echo "smoke rc=$rc in $(( $(now) - t )) s"; tail -3 "$R/logs/smoke.log"
  [ $rc = 0 ] || { tail -40 "$R/logs/smoke.log"; exit 1; }
  # Decode every image once (all cores) before a dozen processes would each do it at once.
  t=$(now)
  $PY - <<'EOF' 2>&1 | tail -3
import os, sys
sys.path.insert(0, ".")
from configs import best_gpu, s0_best
from jaxmm.data import datasets
c = best_gpu.get_config(); c.data.root = os.environ["C"]
datasets.prepare_comp5329(c.data, None, with_images=True)
c.data.limit = 0; c.data.val_size = 2000  # s1_bingi / s4_liu split: all 12,000 records
datasets.prepare_comp5329(c.data, None, with_images=True)
m = s0_best.get_config(); m.data.root = os.environ["M"]
datasets.prepare_matching(m.data, None, with_images=True)
print("image caches ready")
EOF
  echo "caches in $(( $(now) - t )) s"
  ;;

launch)
  setsid nohup bash "$0" jobs > "$R/jobs.log" 2>&1 < /dev/null &
  echo $! > "$R/jobs.pid"
  sleep 2; echo "launched $(cat "$R/jobs.pid")"
  ;;

jobs)
  echo $$ > "$R/jobs.pgid"
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 15 \
    > "$R/gpu_util.csv" 2>/dev/null &
  monitor=$!
  chains=()
  # Issue 7: configs/best_gpu.py, seeds 0 and 1, both stage-1 towers of each at once.
  for s in 0 1; do
    (
      mkdir -p "$R/best_gpu_s$s/stage1_text/word_vectors"
      cp "$DATA"/wv/seed$s/* "$R/best_gpu_s$s/stage1_text/word_vectors/" 2>/dev/null
      args=(--config.data.root=$C --config.seed=$s)
      WD="$R/best_gpu_s$s" train "best_gpu_s${s}_text" best_gpu "${args[@]}" --stage=text &
      WD="$R/best_gpu_s$s" train "best_gpu_s${s}_image" best_gpu "${args[@]}" --stage=image &
      wait
      train "best_gpu_s$s" best_gpu "${args[@]}" && evaluate_heldout "best_gpu_s$s"
    ) &
    chains+=($!)
  done
  # Issue 3: S1 (ResNet-50, two-stage) and S4 (ResNeXt-50 32x4d, full width) at 128 px.
  (
    args=(--config.data.root=$C --config.data.image_size=128 --config.train.epochs=20)
    WD="$R/s1" train s1_text s1_bingi "${args[@]}" --stage=text &
    WD="$R/s1" train s1_image s1_bingi "${args[@]}" --stage=image &
    wait
    train s1 s1_bingi "${args[@]}" && evaluate_heldout s1
  ) &
  chains+=($!)
  (train s4 s4_liu --config.data.root=$C --config.data.image_size=128 \
     --config.model.image.num_filters=64 && evaluate_heldout s4) &
  chains+=($!)
  # Issue 4 (and 3's S0 variants): pretext pretraining, then S0 with and without each.
  (train pre_rot pretrain_rotation --config.data.root=$M &&
   train s0_best_rot s0_best --config.data.root=$M --config.init.image_from="$R/pre_rot") &
  chains+=($!)
  (train pre_mlm pretrain_mlm --config.data.root=$M &&
   train s0_best_mlm s0_best --config.data.root=$M --config.init.text_from="$R/pre_mlm") &
  chains+=($!)
  (train pre_ae pretrain_autoencoder --config.data.root=$M &&
   train s0_ae_lstm_ae s0_ae_lstm --config.data.root=$M --config.init.image_from="$R/pre_ae") &
  chains+=($!)
  (train s0_best s0_best --config.data.root=$M; train s0_ae_lstm s0_ae_lstm --config.data.root=$M) &
  chains+=($!)
  (train s0_matching s0_matching --config.data.root=$M;
   train s0_cnn_mlp s0_cnn_mlp --config.data.root=$M) &
  chains+=($!)
  wait "${chains[@]}"  # not the monitor: a bare `wait` never returned (measured, session 4)
  kill "$monitor" 2>/dev/null
  log_step "all chains ended"
  ;;

collect)  # LIMIT: seconds from now at which whatever still runs is stopped (unless KILL=0)
  LIMIT=${LIMIT:-480}
  end=$(( $(now) + LIMIT ))
  while [ "$(now)" -lt "$end" ] && ! grep -q "all chains ended" "$R/status.txt" 2>/dev/null; do
    sleep 20; snapshot
  done
  if [ "${KILL:-1}" = 1 ] && ! grep -q "all chains ended" "$R/status.txt" 2>/dev/null; then
    log_step "collect: LIMIT reached, stopping the chains"
    kill -TERM -- -"$(cat "$R/jobs.pgid")" 2>/dev/null
    for _ in $(seq 15); do pgrep -f "train.py|evaluate.py" > /dev/null || break; sleep 1; done
  fi
  snapshot; cp "$R/status.txt" "$OUT/status.txt"; tail -40 "$R/status.txt"
  ;;

throughput)  # issue 5 on an idle GPU
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.75 timeout "${LIMIT:-150}" $PY benchmarks/gpu_throughput.py \
    --json 2>&1 | tee "$OUT/gpu_throughput.txt" | tail -15
  ;;
esac
