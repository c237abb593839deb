#!/usr/bin/env bash
# Install discodiff into a virtualenv (default ./.venv) on a fresh machine.
#
#   bash scripts/install.sh [--render] [--test] [--descript] [--venv DIR]
#
#   --render    also the render extra (music21, pyfluidsynth: `discodiff render-corpus`, the demo)
#   --test      also the test extras (pytest, music21, pyfluidsynth, librosa, sentencepiece, onnxruntime, gradio,
#               selenium), basic-pitch and, as root, Debian's chromium + chromium-driver (the studio's browser test)
#   --descript  also the original `dac` package (the `descript` codec backend) in the CPU-safe way
#               described in README "Design notes: the descript backend on CPU torch"
#
# Order matters: torch 2.13.0 first (a local CPU wheel here; a bare `torch` requirement would pull a
# multi-GB CUDA build), then the project. Debian packages for rendering (fluidsynth + GM soundfont)
# are installed when running as root and missing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv EXTRAS=() DESCRIPT=0
while [ $# -gt 0 ]; do
  case "$1" in
    --render) EXTRAS+=(render) ;;
    --test) EXTRAS+=(test) ;;
    --descript) DESCRIPT=1 ;;
    --venv) VENV="$2"; shift ;;
    *) echo "install.sh: unknown option $1 (use --render, --test, --descript, --venv DIR)" >&2; exit 2 ;;
  esac
  shift
done

if ! { [ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] && ldconfig -p | grep -q libfluidsynth; }; then
  if [ "$(id -u)" = 0 ]; then
    echo "[install] Debian packages: fluidsynth fluid-soundfont-gm"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      fluidsynth libfluidsynth3 fluid-soundfont-gm >/dev/null
  else
    echo "[install] rendering needs Debian packages: sudo apt-get install fluidsynth fluid-soundfont-gm" >&2
  fi
fi
# the studio's browser test (tests/test_studio_browser.py) drives Debian's headless Chromium through its chromedriver
if [[ " ${EXTRAS[*]:-} " == *" test "* ]] && ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
  if [ "$(id -u)" = 0 ]; then
    echo "[install] Debian packages: chromium chromium-driver fonts-liberation"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium chromium-driver fonts-liberation >/dev/null
  else
    echo "[install] the studio's browser test needs Debian packages: sudo apt-get install chromium chromium-driver" >&2
  fi
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install torch==2.13.0
if [ ${#EXTRAS[@]} -gt 0 ]; then SPEC=".[$(IFS=,; echo "${EXTRAS[*]}")]"; else SPEC="."; fi
$PIP install -e "$SPEC"
# basic-pitch's wheel pins TensorFlow on Linux; its embedder only reads the ONNX model inside the wheel (run by
# onnxruntime, from the eval/test extras), so it is installed without its dependencies.
if [[ " ${EXTRAS[*]:-} " == *" test "* ]]; then $PIP install --no-deps basic-pitch==0.4.0; fi

if [ "$DESCRIPT" = 1 ]; then
  # The dac package imports audiotools, which imports torchaudio at module level. PyPI's torchaudio
  # for this torch is a CUDA build whose extension cannot load on CPU torch, so install a copy of
  # the official wheel without its compiled extension (torchaudio supports running without it),
  # then dac/audiotools without their pins and only the packages they import at load time.
  WHEELHOUSE=$(mktemp -d)
  "$VENV/bin/python" tools/pure_torchaudio.py "$WHEELHOUSE" --version 2.11.0 >/dev/null
  $PIP install --no-deps "$WHEELHOUSE"/torchaudio-*.whl
  $PIP install --no-deps descript-audio-codec==1.0.0 descript-audiotools==0.7.2
  $PIP install argbind flatten-dict julius ffmpy importlib-resources randomname tensorboard
  rm -rf "$WHEELHOUSE"
fi
echo "[install] done: $("$VENV/bin/python" -c 'import discodiff, torch; print("discodiff", discodiff.__version__, "torch", torch.__version__)')"
