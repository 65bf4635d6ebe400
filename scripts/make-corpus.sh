#!/usr/bin/env bash
# Writes the training corpus of the bundled default model: the King James Version of
# the Bible (1611; public domain), as produced by Debian's bible-kjv package, with verse
# numbers removed so that it reads as prose. Usage: scripts/make-corpus.sh OUT.txt
set -euo pipefail
out=${1:?usage: scripts/make-corpus.sh OUT.txt}
if ! command -v bible >/dev/null; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "make-corpus: installing bible-kjv"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends bible-kjv >/dev/null
fi
# -l0: one verse per line. Chapter headings ("Genesis 1") stay; verse numbers go.
bible -l0 "Gen1:1-Rev22:21" | sed -E 's/^ +[0-9]+ //' >"$out.tmp"
mv "$out.tmp" "$out"
echo "make-corpus: wrote $out ($(wc -c <"$out") bytes)"
