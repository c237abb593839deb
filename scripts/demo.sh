#!/usr/bin/env bash
# The main job: DAC round trip (encode -> snap to the codebooks -> decode) of a short signal.
#   CODEC=descript/dac_44khz (default; a hub id, a local directory, or a .pth with CODEC_BACKEND=descript)
# Offline, when the real codec is not cached, it says so in one line and runs the same path on a
# tiny random codec built locally (its output is not music: it proves the pipeline runs).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
CODEC=${CODEC:-descript/dac_44khz}
CODEC_BACKEND=${CODEC_BACKEND:-transformers}
OUT=out/demo
mkdir -p "$OUT"

"$BIN/python" -c "
import numpy as np
from discodiff.audio import save_audio
t = np.arange(4 * 44100) / 44100
chord = sum(np.sin(2 * np.pi * f * t) * np.exp(-(t % 1)) for f in (220.0, 277.2, 329.6)) / 4
save_audio('$OUT/input.wav', chord.astype(np.float32)[None])"

getent hosts huggingface.co >/dev/null 2>&1 || export HF_HUB_OFFLINE=1   # no DNS: skip the hub's retries
if ! "$BIN/python" -c "from discodiff.codec import DacCodec; DacCodec.from_pretrained('$CODEC', backend='$CODEC_BACKEND')" 2>/dev/null; then
  echo "codec '$CODEC' is not reachable offline; running the same round trip on a tiny random codec built locally (output is not music)"
  "$BIN/discodiff" tiny-codec "$OUT/tiny_codec"
  CODEC=$OUT/tiny_codec CODEC_BACKEND=transformers
fi
"$BIN/discodiff" encode "$OUT/input.wav" "$OUT/latents.safetensors" --codec "$CODEC" --codec-backend "$CODEC_BACKEND"
"$BIN/discodiff" reconstruct "$OUT/input.wav" "$OUT/reconstruction.wav" --codec "$CODEC" --codec-backend "$CODEC_BACKEND"
