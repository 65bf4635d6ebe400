#!/usr/bin/env bash
# Installs the Debian packages braid needs to build and test. Idempotent and quiet
# when everything is already present; uses sudo only when not running as root.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libopenblas-openmp-dev   # BLAS built on OpenMP: one threading model with braid's own loops
  nlohmann-json3-dev       # JSON (config.json, tokenizer.json, safetensors headers)
  libpcre2-dev             # Unicode regex for tokenizer pre-tokenization
  libutf8proc-dev          # Unicode normalization (NFC) and categories
  libcli11-dev             # command-line parsing for the braid CLI
  libcpp-httplib-dev       # HTTP server for braid serve
  libxxhash-dev            # checksums of state snapshots and the prefix cache's files
  curl                     # the serving tests drive braid serve with it
  clang libclang-rt-14-dev libomp-14-dev   # libFuzzer targets (make fuzz)
  libgtest-dev libgmock-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing+=("$p")
  fi
done

# Node.js and npm drive the server with the official OpenAI client in the tests; any
# installed node will do (Debian's, or another vendor's package that includes npm).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
