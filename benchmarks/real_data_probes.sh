#!/usr/bin/env bash
# Representation quality on the small real datasets of ../shared/data (the evaluation issue's
# protocol): CPU pre-training of at most MINUTES minutes per dataset, then linear probes on the
# frozen features beside the random-init and MFCC baselines, under the same probe and split.
#
#   bash benchmarks/real_data_probes.sh [OUT_DIR]        (make probes)
#
# Env: PY (python, default .venv/bin/python), MINUTES (default 19), THREADS (torch threads per
# run, default 1: fsdd and speech_commands pre-train side by side on a 2-core machine).
# Reports: OUT_DIR/<run>/eval/<task>.json and the tables printed at the end.
set -euo pipefail
OUT=$(realpath -m "${1:-runs/real_data_probes}")
PY=${PY:-.venv/bin/python}
MINUTES=${MINUTES:-19}
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

# Spoken digits (8 kHz, resampled once) and Speech Commands words (speaker-disjoint split).
pretrain fsdd data=fsdd trainer=cpu trainer.max_steps=2000 trainer.val_check_interval=250 &
pretrain speech_commands data=speech_commands trainer=cpu trainer.max_steps=1200 \
  trainer.val_check_interval=200 &
wait
# LibriSpeech layout with the real CPC phone-label file (tiny: tests the alignment end to end).
# Two utterances have labels; hold out one of them as the phone probe's test split.
echo 2911-12359-0007 >"$OUT/librispeech_test_split.txt"
pretrain librispeech data=librispeech data.root=../shared/data/librispeech_sample trainer=cpu \
  data.test_split_file="$OUT/librispeech_test_split.txt" trainer.max_steps=40 \
  trainer.val_check_interval=20
# CIFAR-10 patches (CPC v2 settings, small).
pretrain cifar experiment=cpc_images_v2_cifar trainer=cpu trainer.max_steps=300 \
  trainer.val_check_interval=100 trainer.limit_val_batches=4

evaluate() {  # run, task
  "$PY" -m cpc_lightning.evaluate run_dir="$OUT/$1" task="$2" | tee "$OUT/$1.$2.txt"
}
evaluate fsdd speakers
evaluate fsdd classes
evaluate speech_commands classes
evaluate librispeech phones
evaluate cifar classes
