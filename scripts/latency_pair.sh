#!/usr/bin/env bash
# Interleaved latency of two checkpoints (before, after), three turns each, so both see the same
# load: `emotrack bench latency --no-speculative --json` per run into runs/lat_TAG_{before,after}_N.json,
# then the median over the turns of the p95 end to end minus hangover.
# Usage: bash scripts/latency_pair.sh BEFORE AFTER TAG   (about 5 min on the 2-core CPU)
# BEFORE_FLAGS / AFTER_FLAGS (environment) add options to one side's runs, e.g. one checkpoint
# with and without a setting: BEFORE_FLAGS=--no-reread bash scripts/latency_pair.sh default default T
# (The docs' `runs/bench_latN.sh` runs are this script.) A run that fails stops the pair with its
# error; earlier results of the same TAG are replaced only by complete runs.
set -u
if [ $# -ne 3 ]; then
  echo "usage: bash scripts/latency_pair.sh BEFORE AFTER TAG" >&2
  exit 2
fi
for ckpt in "$1" "$2"; do  # both must load before five minutes are spent on one of them
  if [ "$ckpt" != default ] && [ ! -f "$ckpt/config.json" ]; then
    echo "latency_pair.sh: $ckpt is not a checkpoint folder (no config.json)" >&2
    exit 2
  fi
done
mkdir -p runs
for i in 1 2 3; do
  for side in before after; do
    ckpt=$1; flags=${BEFORE_FLAGS:-}
    [ $side = after ] && ckpt=$2 && flags=${AFTER_FLAGS:-}
    out="runs/lat_$3_${side}_$i.json"
    # shellcheck disable=SC2086  # the flags are words
    if ! .venv/bin/emotrack -q bench latency --no-speculative --checkpoint "$ckpt" $flags --json \
        > "$out.partial"; then
      echo "latency_pair.sh: the $side run $i ($ckpt) failed; earlier results kept" >&2
      rm -f "$out.partial"
      exit 1
    fi
    tail -1 "$out.partial" > "$out" && rm -f "$out.partial"
  done
done
.venv/bin/python - "$3" <<'PY'
import json, statistics, sys
tag = sys.argv[1]
for side in ("before", "after"):
    p95 = []
    for i in (1, 2, 3):
        run = json.load(open(f"runs/lat_{tag}_{side}_{i}.json"))
        p95.append(run["latency"]["end_to_end_minus_hangover"]["p95"])
        passes = run["stats"].get("asr_encoder_passes")
    print(f"{side}: p95 end to end minus hangover {[round(v, 3) for v in p95]}, "
          f"median {statistics.median(p95):.3f} s; encoder passes (last run) {passes}")
PY
