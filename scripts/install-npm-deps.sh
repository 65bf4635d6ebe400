#!/usr/bin/env bash
# Installs the npm packages the serving tests use (the official `openai` client) into
# tests/js/node_modules, at the versions tests/js/package.json pins. Idempotent and quiet
# when they are already there. Node.js itself comes from scripts/install-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/../tests/js"
want=$(node -e 'console.log(require("./package.json").dependencies.openai)')
have=$(node -e 'try { console.log(require("./node_modules/openai/package.json").version) } catch { console.log("") }')
if [ "$want" = "$have" ]; then
  exit 0
fi
echo "install-npm-deps: installing openai@$want into tests/js/node_modules"
npm install --no-audit --no-fund --loglevel=error >/dev/null
