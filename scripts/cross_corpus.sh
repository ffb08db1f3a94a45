#!/usr/bin/env bash
# Cross-corpus reads of the shipped voice recipe (issue 9, reported, not a target): the shared
# readout fitted on one acted corpus (the other corpus's speakers held out of the fit; the test
# speakers are never in one), calibrated as stage 30, then every clip of the other corpus read
# (`emotrack eval --split all`): EMO-DB from RAVDESS, RAVDESS from EMO-DB.
# Usage: bash scripts/cross_corpus.sh SOURCE TAG [more fit-voice options]
#   SOURCE: the checkpoint fit-voice starts from (runs/d30 for stages 30-32)
#   e.g. stage 32's recipe: bash scripts/cross_corpus.sh runs/d30 s200 --synthetic-voices 200
# Each checkpoint and eval output goes to runs/cross_TAG/; the last lines print audio-only and
# fused UA (42 s for both directions with the features cached).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bash scripts/cross_corpus.sh SOURCE TAG [fit-voice options]" >&2
  exit 2
fi
SOURCE=$1
OUT=runs/cross_$2
shift 2
E=.venv/bin/emotrack
mkdir -p "$OUT"
EMODB=(emodb/03 emodb/08 emodb/09 emodb/10 emodb/11 emodb/12)
RAVDESS=()
for a in $(seq -w 1 16); do RAVDESS+=("ravdess/$a"); done

read_from() {  # NAME EVAL_DATASET HELD_OUT...
  local name=$1 dataset=$2
  shift 2
  $E fit-voice --checkpoint "$SOURCE" --output "$OUT/$name.fit" --losses all --l2 0.003 \
    --emodb-weight 0.01 --speaker-baseline 0.5 --neutral-weight 4 "${EXTRA[@]}" \
    --held-out-speakers "$@"
  $E calibrate --checkpoint "$OUT/$name.fit" --output "$OUT/$name" --no-heads --audio-scale 0.75 \
    --wordless-audio-scale 1.5 --voice-hinge step --voice-margin 4
  $E eval --dataset "$dataset" --split all --checkpoint "$OUT/$name" --json > "$OUT/$name.txt"
}

EXTRA=("$@")
read_from emodb_from_ravdess emodb "${EMODB[@]}"
read_from ravdess_from_emodb ravdess "${RAVDESS[@]}"
for f in "$OUT"/*.txt; do
  .venv/bin/python -c 'import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
name, audio, wa, fused = (r[k] for k in ("dataset", "audio_uar", "audio_wa", "fused_uar"))
print(f"{sys.argv[1]}: {name} audio-only UA {audio:.1f} (accuracy {wa:.1f}), fused UA {fused:.1f}")
' "$f"
done
