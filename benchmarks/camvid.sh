#!/usr/bin/env bash
# CamVid end to end on this machine, every step timed: train deeplab-largefov-tiny from
# scratch, save its scores, tune the CRF on TRAIN images only, score val with the DCNN, the
# paper's preset CRF and the tuned CRF (trimap bands around the label's class changes).
#
#   bash benchmarks/camvid.sh [CAMVID_DIR] [RUN_DIR]
#
# Defaults: ../shared/data/camvid and runs/camvid. Steps whose output exists are skipped
# (a finished training is not redone); an interrupted training resumes. Run it with
# nothing else busy: the training time is part of what it reports.
set -euo pipefail
CAMVID=${1:-../shared/data/camvid}
RUN=${2:-runs/camvid}
PY=${PY:-.venv/bin/python}
THREADS=${THREADS:-2}  # fixed: the trained weights are then the same bit for bit
mkdir -p "$RUN"
TIMES="$RUN/times.txt"

step() {  # step NAME COMMAND...: run, time, append "NAME SECONDS" to times.txt
    local name=$1
    shift
    local start end
    start=$(date +%s.%N)
    "$@"
    end=$(date +%s.%N)
    awk -v n="$name" -v a="$start" -v b="$end" 'BEGIN { printf "%s %.1f\n", n, b - a }' |
        tee -a "$TIMES"
}

DATA=(--data camvid --camvid-root "$CAMVID")
if [ ! -f "$RUN/train/model.safetensors" ]; then
    resume=()
    [ -d "$RUN/train/checkpoints" ] && resume=(--resume)
    step train "$PY" -m deeplab train --config configs/deeplab-largefov-tiny-camvid.json \
        "${DATA[@]}" --out "$RUN/train" --threads "$THREADS" --no-progress "${resume[@]}"
fi
WEIGHTS="$RUN/train/model.safetensors"
sha256sum "$WEIGHTS"

# Scores of all 367 training images, kept for the CRF search (the network runs once).
[ -f "$RUN/eval-train/results.json" ] || step save-train-scores "$PY" -m deeplab evaluate \
    --weights "$WEIGHTS" "${DATA[@]}" --split train --crf none --save-logits "$RUN/logits-train" \
    --out "$RUN/eval-train" --threads "$THREADS" --no-progress

# A coarse grid wider than the paper's VOC one (CamVid's network is coarser, its photos a
# different scale: w1 3..9, theta_alpha 20..100, theta_beta 3..11, 100 settings) and one
# refinement round, on 50 training images spread over all four drives.
[ -f "$RUN/tune/best_crf.json" ] || step tune-crf "$PY" -m deeplab tune-crf \
    --logits "$RUN/logits-train" "${DATA[@]}" --split train --num-images 50 --spread \
    --w1 3:9:2 --theta-alpha 20:100:20 --theta-beta 3:11:2 --rounds 1 \
    --out "$RUN/tune" --workers 2 --no-progress

# Val: the DCNN and the paper's preset (scores saved), then the tuned CRF on those scores.
[ -f "$RUN/eval-val-preset/results.json" ] || step eval-val-preset "$PY" -m deeplab evaluate \
    --weights "$WEIGHTS" "${DATA[@]}" --split val --crf deeplab-largefov --trimap \
    --save-logits "$RUN/logits-val" --out "$RUN/eval-val-preset" --workers 2 --no-progress
[ -f "$RUN/eval-val-tuned/results.json" ] || step eval-val-tuned "$PY" -m deeplab evaluate \
    --from-logits "$RUN/logits-val" "${DATA[@]}" --split val --crf "$RUN/tune/best_crf.json" \
    --trimap --out "$RUN/eval-val-tuned" --workers 2 --no-progress
cat "$RUN/eval-val-preset/results.md" "$RUN/eval-val-tuned/results.md"
