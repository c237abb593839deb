#!/usr/bin/env bash
# Rebuilds the example caption dataset in this folder from nothing, offline, with one command:
#   bash captions/bach-chorales/make.sh            (about 5 minutes on one CPU core)
# 1. renders 10 s of the 45 train-split Bach chorales bwv4* (the candidates) and of the 96 bwv2* (the reference),
# 2. tags every candidate from its rendering metadata, 3. writes 3 captions per clip with the template fallback,
# 4. ranks the candidates by the log-likelihood of their CREPE (tiny) embeddings under a Gaussian (Ledoit-Wolf) of the
#    reference's, 5. releases the best 20% as a Hugging Face dataset folder (dataset/) with its card, and copies the
#    full ranking (ranking.csv). Renderings and the work folder go to build/ (not committed); rerunning resumes there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${BUILD:-$here/build}
run="python -m discodiff.cli"
$run render-corpus --pieces 'bach/bwv4*' --split train --seconds 10 --seed 0 --out "$build/candidates" --quiet
$run render-corpus --pieces 'bach/bwv2*' --split train --seconds 10 --seed 0 --out "$build/reference" --quiet
$run captions tags "$build/candidates" --work "$build/work" --quiet
$run captions rephrase --work "$build/work" --num-captions 3 --seed 0 --quiet
$run captions rank --work "$build/work" --reference "$build/reference" --embedder crepe --keep-top 0.2 --quiet
$run captions release --work "$build/work" --out "$here/dataset" --audio path \
    --audio-root "$build/candidates" --name "Bach chorales, rendered: captions (discodiff example)" --overwrite --quiet \
    --license-details "The scores are J. S. Bach's (public domain) from the music21 corpus; the audio is rendered with \
FluidSynth and the FluidR3_GM soundfont (MIT); the captions and rankings are discodiff output (MIT)."
cp "$build/work/rank/ranking.csv" "$here/ranking.csv"
