#!/usr/bin/env bash
# Representation quality on the small real datasets of ../shared/data, on CPU (`make probes`).
#
#   bash benchmarks/real_data_probes.sh [OUT_DIR]              the recipe (default)
#   PART=datasets bash benchmarks/real_data_probes.sh [OUT_DIR]  one pre-training per dataset
#   PART=images bash benchmarks/real_data_probes.sh [OUT_DIR]    the image recipe
#
# recipe: `experiment=cpc_audio_cpu` (pre-training on speechocean762_subset; on 2 cores ~9 min
# with native bf16, ~18 in fp32) once per seed in SEEDS (default "1 2 3"), then `evaluate` of
# each run on TIMIT's held-out
# speakers (frame phones, ABX within/across, CTC phone error rate), speechocean762 speakers, FSDD
# digits and speakers and Speech Commands words (speaker-disjoint), each beside random init and
# MFCC; benchmarks/recipe_table.py prints mean +- std over the seeds and CPC minus MFCC with a
# paired-bootstrap interval for ABX and PER (OUT_DIR/recipe.md).
# datasets: pre-training of at most MINUTES minutes per dataset (fsdd, Speech Commands,
# LibriSpeech sample, CIFAR-10), then probes with three probe seeds.
#
# images: `experiment=cpc_images_cpu` (pre-training on the 50,000 CIFAR-10 training images of
# DATA/cifar10) once per seed in SEEDS, then `evaluate task=classes` on its 5,000 test images:
# pooled features of CPC, the same nets at random init, and raw pixels, each probe trained on
# the 50,000 training images (its L2 penalty chosen per source on 10 % of them); benchmarks/
# recipe_table.py --images prints mean +- std and the paired-bootstrap intervals
# (OUT_DIR/images.md).
# Env: PY (python, default .venv/bin/python), DATA (the example datasets, default ../shared/data),
# SEEDS, CTC_WD (the PER head's weight decays to choose from, default "0,1e-3,1e-2,1e-1"),
# MINUTES (default 19), THREADS (torch threads per run while fsdd and speech_commands
# pre-train side by side, default 1; twice that otherwise), IMAGE_THREADS (torch threads of the
# image recipe, default 2 x THREADS; 1 to run two of them side by side on 2 cores).
# Reports: OUT_DIR/<run>/eval*/<task>.json and the tables printed at the end.
set -euo pipefail
OUT=$(realpath -m "${1:-runs/real_data_probes}")
PY=${PY:-.venv/bin/python}
DATA=$(realpath -m "${DATA:-../shared/data}")
export CPC_DATA_DIR=$DATA
MINUTES=${MINUTES:-19}
CTC_WD=${CTC_WD:-0,1e-3,1e-2,1e-1}
THREADS=${THREADS:-1}
export OMP_NUM_THREADS=$THREADS
mkdir -p "$OUT"
LIMIT="trainer.max_time=00:00:${MINUTES}:00 trainer.enable_progress_bar=false probe.enabled=false"

pretrain() {  # name, then overrides
  local name=$1
  shift
  # shellcheck disable=SC2086
  /usr/bin/env time -f "$name pre-training wall %e s" \
    "$PY" -m cpc_lightning.train "$@" $LIMIT hydra.run.dir="$OUT/$name" >"$OUT/$name.log" 2>&1
}

evaluate() {  # report name, run, task, then overrides; three probe seeds on cached features
  local name=$1 run=$2 task=$3
  shift 3
  "$PY" -m cpc_lightning.evaluate run_dir="$OUT/$run" task="$task" 'probe.seeds=[0,1,2]' "$@" |
    tee "$OUT/$name.txt"
}
recipe() {
  export OMP_NUM_THREADS=$((2 * THREADS))
  EVAL_PRECISION=${EVAL_PRECISION:-$("$PY" -c 'from cpc_lightning.training.environment import native_bf16_cpu; print("bf16" if native_bf16_cpu() else "32")')}
  echo "evaluation precision: $EVAL_PRECISION"
  local runs=()
  for seed in ${SEEDS:-1 2 3}; do
    local run="$OUT/recipe_seed$seed"
    local start=$SECONDS
    "$PY" -m cpc_lightning.train experiment=cpc_audio_cpu seed="$seed" \
      trainer.enable_progress_bar=false hydra.run.dir="$run" >"$run.log" 2>&1
    echo $((SECONDS - start)) >"$run/pretrain_wall_s.txt"
    echo "seed $seed: pre-training wall $((SECONDS - start)) s"
    # features in the precision the recipe trains in (trainer=cpu, precision auto): bf16
    # autocast where the CPU has native bf16 (AMX / AVX512-BF16), else fp32; EVAL_PRECISION=32|bf16
    # chooses. The large sets are capped (seeded) so that one seed's evaluations take minutes:
    # speechocean762 400 + 150 utterances, FSDD 1,000 training clips (all 300 test clips)
    local ev=("$PY" -m cpc_lightning.evaluate run_dir="$run" precision="$EVAL_PRECISION")
    # the recipe's feature per task, chosen on TIMIT's training speakers (never its test
    # speakers; docs/recipe_search.md): the context c everywhere (PER 72.3 vs 74.7 % for z);
    # for ABX each utterance's c standardised (normalise=utterance: across 12.7 vs 13.1 %)
    "${ev[@]}" task=phones data=timit out_dir="$run/eval_timit"
    # the CTC head's L2 penalty is chosen per source (CPC, random init, MFCC alike) on 2 of the 8
    # training speakers, then each head is trained on all 8 with it: unregularised, the linear
    # head overfits the 80 training utterances (CTC_WD="0" scores the earlier fixed protocol)
    "${ev[@]}" task=phone_recognition data=timit "phone_recognition.weight_decay=[${CTC_WD}]" \
      out_dir="$run/eval_timit"
    "${ev[@]}" task=abx normalise=utterance data=timit out_dir="$run/eval_timit"
    # speaker identity needs the test speakers in training: all 125, 20 % of each held out
    "${ev[@]}" task=speakers data=speechocean762 data.num_test_speakers=null \
      data.test_fraction=0.2 probe.max_train_items=400 probe.max_test_items=150 \
      out_dir="$run/eval_speechocean"
    for task in classes speakers; do
      "${ev[@]}" task=$task data=fsdd probe.max_train_items=1000 out_dir="$run/eval_fsdd"
    done
    "${ev[@]}" task=classes data=speech_commands out_dir="$run/eval_speech_commands"
    runs+=("$run")
  done
  "$PY" benchmarks/recipe_table.py "${runs[@]}" --out "$OUT/recipe.md"
}
run_probe() {  # run dir, key, default: the run's probe.<key> (the default when unset)
  "$PY" -c 'import sys; from omegaconf import OmegaConf
print(OmegaConf.select(OmegaConf.load(sys.argv[1]), "probe." + sys.argv[2]) or sys.argv[3])' \
    "$1/config_resolved.yaml" "$2" "$3"
}
images() {
  export OMP_NUM_THREADS=${IMAGE_THREADS:-$((2 * THREADS))}
  local runs=()
  for seed in ${SEEDS:-1 2 3}; do
    local run="$OUT/images_seed$seed"
    local start=$SECONDS
    "$PY" -m cpc_lightning.train experiment=cpc_images_cpu seed="$seed" probe.enabled=false \
      trainer.enable_progress_bar=false hydra.run.dir="$run" >"$run.log" 2>&1
    echo $((SECONDS - start)) >"$run/pretrain_wall_s.txt"
    echo "seed $seed: pre-training wall $((SECONDS - start)) s"
    # the recipe's probe feature, pooling and probe lr (its probe.*, chosen on the validation
    # split); the penalty list reaches 0.1 (on all 50,000 images issue 31's list chose its
    # largest value, 0.01)
    "$PY" -m cpc_lightning.evaluate run_dir="$run" task=classes data=cifar10_patches \
      data.root="$DATA/cifar10" feature="$(run_probe "$run" feature z)" \
      pool="$(run_probe "$run" pool grid4)" probe.lr="$(run_probe "$run" lr 1e-3)" \
      'probe.weight_decay=[0,1e-3,1e-2,1e-1]' probe.extract_batch=64 \
      out_dir="$run/eval_cifar10" | tail -n 12
    runs+=("$run")
  done
  "$PY" benchmarks/recipe_table.py --images "${runs[@]}" --out "$OUT/images.md"
}
if [ "${PART:-recipe}" = images ]; then
  images
  exit 0
fi
if [ "${PART:-recipe}" = recipe ]; then
  recipe
  exit 0
fi

# Spoken digits (8 kHz, resampled once) and Speech Commands words (speaker-disjoint split).
pretrain fsdd data=fsdd trainer=cpu trainer.max_steps=2000 trainer.val_check_interval=250 &
pretrain speech_commands data=speech_commands trainer=cpu trainer.max_steps=1200 \
  trainer.val_check_interval=200 &
wait
# LibriSpeech layout with the real CPC phone-label file (tiny: tests the alignment end to end).
# Two utterances have labels; hold out one of them as the phone probe's test split.
echo 2911-12359-0007 >"$OUT/librispeech_test_split.txt"
pretrain librispeech data=librispeech data.root="$DATA/librispeech_sample" trainer=cpu \
  data.test_split_file="$OUT/librispeech_test_split.txt" trainer.max_steps=40 \
  trainer.val_check_interval=20
export OMP_NUM_THREADS=$((2 * THREADS))
# CIFAR-10 patches (CPC v2 settings, small): about 15 min on 2 cores.
pretrain cifar experiment=cpc_images_v2_cifar trainer=cpu trainer.max_steps=2500 \
  trainer.val_check_interval=250 trainer.limit_val_batches=4

evaluate fsdd.speakers fsdd speakers
evaluate fsdd.classes fsdd classes
evaluate speech_commands.classes speech_commands classes
evaluate librispeech.phones librispeech phones
evaluate cifar.classes cifar classes
# The encoder's patch vectors z (before the masked-conv context), mean-pooled over the grid.
evaluate cifar.classes_z cifar classes feature=z out_dir="$OUT/cifar/eval_z"
