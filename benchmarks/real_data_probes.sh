#!/usr/bin/env bash
# Representation quality on the small real datasets of ../shared/data (the evaluation issue's
# protocol): CPU pre-training of at most MINUTES minutes per dataset, then linear probes on the
# frozen features beside the random-init and MFCC baselines, under the same probe and split.
#
#   bash benchmarks/real_data_probes.sh [OUT_DIR]        (make probes)
#
# Env: PY (python, default .venv/bin/python), DATA (the example datasets, default ../shared/data),
# MINUTES (default 19), THREADS (torch threads per run while fsdd and speech_commands pre-train
# side by side, default 1; twice that afterwards), SPEECH_MINUTES (the real-speech recipe's
# pre-training budget on both threads, default 25), ONLY=speech (run the real-speech part alone).
# Reports: OUT_DIR/<run>/eval/<task>.json and the tables printed at the end.
set -euo pipefail
OUT=$(realpath -m "${1:-runs/real_data_probes}")
PY=${PY:-.venv/bin/python}
DATA=$(realpath -m "${DATA:-../shared/data}")
export CPC_DATA_DIR=$DATA
MINUTES=${MINUTES:-19}
THREADS=${THREADS:-1}
export OMP_NUM_THREADS=$THREADS
mkdir -p "$OUT"
LIMIT="trainer.max_time=00:00:${MINUTES}:00 trainer.enable_progress_bar=false probe.enabled=false"

SPEECH_MINUTES=${SPEECH_MINUTES:-25}

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
speech() {
  # Real speech: pre-train on speechocean762 (1,000 training utterances of 100 speakers, ~1 h;
  # 25 speakers held out) for at most SPEECH_MINUTES minutes on both threads, then probe TIMIT's
  # held-out speakers (frame phones, ABX within/across, phone error rate) and speaker identity on
  # speechocean762 (all 125 speakers, a seeded 20 % of each speaker's utterances held out: a
  # speaker probe must have seen the speakers it tests).
  export OMP_NUM_THREADS=$((2 * THREADS))
  /usr/bin/env time -f "speechocean pre-training wall %e s" "$PY" -m cpc_lightning.train \
    data=speechocean762 trainer=cpu trainer.max_steps=1000000 \
    trainer.max_time="00:00:${SPEECH_MINUTES}:00" trainer.val_check_interval=500 \
    trainer.limit_val_batches=20 trainer.enable_progress_bar=false probe.enabled=false \
    hydra.run.dir="$OUT/speechocean" >"$OUT/speechocean.log" 2>&1
  evaluate timit.phones speechocean phones data=timit out_dir="$OUT/speechocean/eval_timit"
  evaluate timit.abx speechocean abx data=timit out_dir="$OUT/speechocean/eval_timit"
  evaluate timit.phone_recognition speechocean phone_recognition data=timit \
    out_dir="$OUT/speechocean/eval_timit"
  evaluate speechocean.speakers speechocean speakers data=speechocean762 data.num_test_speakers=null \
    data.test_fraction=0.2 out_dir="$OUT/speechocean/eval_speakers"
}
if [ "${ONLY:-}" = speech ]; then
  speech
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
speech
