#!/usr/bin/env bash
# The test-split evaluations of a checkpoint (read once per candidate): RAVDESS actors 17-20,
# EMO-DB speaker 13, speech_av, CK+ (their own splits), CMU-MOSI, and MELD / IEMOCAP with the
# RAVDESS test actors' neutral voices. Each JSON goes to runs/test_TAG/; the last lines print.
# Usage: bash scripts/test_evals.sh CHECKPOINT TAG   (3.6 min for the default on the 2-core CPU)
# (The docs' `runs/test_evals_v.sh` runs are this script.)
set -u
if [ $# -ne 2 ]; then
  echo "usage: bash scripts/test_evals.sh CHECKPOINT TAG" >&2
  exit 2
fi
CKPT=$1
OUT=runs/test_$2
E=.venv/bin/emotrack
mkdir -p "$OUT"
for d in ravdess emodb speech_av ckplus; do
  $E eval --dataset $d --split test --checkpoint "$CKPT" --json > "$OUT/$d.txt" 2>&1
done
$E eval --dataset mosi --checkpoint "$CKPT" --json > "$OUT/mosi.txt" 2>&1
.venv/bin/python benchmarks/fusion_ablation.py --checkpoint "$CKPT" --datasets meld iemocap \
  --conditions text "text+neutral speech" > "$OUT/fusion.txt" 2>&1
for f in "$OUT"/*.txt; do echo "== $f"; tail -1 "$f" | cut -c1-600; done
tail -8 "$OUT/fusion.txt"
