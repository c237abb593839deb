#!/usr/bin/env bash
# The main job: an accompaniment for a vocal, generated from a text prompt.
#   MODEL=path/to/model   a trained model directory (from training export); default: none
# Input: the melody of Bach's chorale BWV 66.6, rendered offline to a vocal stem from music21's
# bundled score, and one of its generated captions. Without a trained MODEL (none can be downloaded
# here) it says so in one line and samples from an untrained tiny model built locally: the path is
# real (render -> DAC-encode the vocal -> primary and secondary U-Nets with guidance -> snap ->
# decode -> mix), the output is noise.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=out/demo
mkdir -p "$OUT"

"$BIN/discodiff" render-corpus --pieces bach/bwv66.6 --seconds 12 --out "$OUT/rendered" --quiet
PROMPT=$("$BIN/python" -c "from discodiff.data import read_captions; print(read_captions('$OUT/rendered/captions.jsonl')['bach-bwv66.6'][0])")

if [ -z "${MODEL:-}" ]; then
  echo "no trained discodiff model is available offline (set MODEL=dir); sampling from an untrained tiny model built locally (output is noise)"
  MODEL=$OUT/tiny_model
  "$BIN/discodiff" new-model "$MODEL" --config configs/tiny.yaml --overwrite  # the demo's own scratch model
fi
"$BIN/discodiff" sample --model "$MODEL" --prompt "$PROMPT" --vocal "$OUT/rendered/bach-bwv66.6/vocals.wav" \
  --out "$OUT/accompaniment.wav" --mix "$OUT/mix.wav" --seed 0
echo "prompt: $PROMPT"
echo "demo outputs:"; ls -l "$OUT"/*.wav
