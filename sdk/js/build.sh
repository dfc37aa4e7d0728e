#!/usr/bin/env bash
# Builds (or tests) a JavaScript rule: a directory with `rule.js` (its default export is the
# rule class) and optionally `*.test.js` (node's test runner).
#
#   sdk/js/build.sh RULE_DIR OUT.wasm    build the component (esbuild + jco componentize)
#   sdk/js/build.sh --quickjs RULE_DIR OUT.wasm
#                                        the same on the QuickJS engine instead of
#                                        StarlingMonkey: a tenth of the size and ~8x cheaper
#                                        per evaluation, for plain ES2023 rule logic
#   sdk/js/build.sh --test RULE_DIR...   run the rules' unit tests natively (node --test)
#
# Installs what it needs the first time, from npm, into
# ${RULEBOX_TOOLS:-~/.cache/rulebox/tools}/js (jco, componentize-js and esbuild, pinned),
# and says exactly what is missing when it cannot. The component is built with every WASI
# feature disabled: it imports nothing but rulebox:rule, cannot make HTTP requests, and
# never reads a clock (which would make its results uncacheable).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
wit="$(cd "$here/../../wit" && pwd)"
tools="${RULEBOX_TOOLS:-$HOME/.cache/rulebox/tools}"
prefix="$tools/js"
say() { echo "sdk/js/build.sh: $*" >&2; }

# jco 1.35.0's preview2-shim 0.26.1 cannot read a WIT directory: pinned to 0.25.0.
manifest='{
  "name": "rulebox-js-tools",
  "private": true,
  "dependencies": {
    "@bytecodealliance/jco": "1.35.0",
    "@bytecodealliance/componentize-js": "0.23.0",
    "esbuild": "0.25.12"
  },
  "overrides": { "@bytecodealliance/preview2-shim": "0.25.0" }
}'

need_node() {
  command -v node >/dev/null || { say "node is missing: install it (Debian: apt-get install nodejs npm)"; exit 1; }
  local major; major="$(node -p 'process.versions.node.split(".")[0]')"
  [ "$major" -ge 18 ] || { say "node is $(node --version); the tools need 18 or newer"; exit 1; }
}

ensure_tools() {
  need_node
  if [ -f "$prefix/package.json" ] && [ "$(cat "$prefix/package.json")" = "$manifest" ] &&
    [ -x "$prefix/node_modules/.bin/jco" ] && [ -x "$prefix/node_modules/.bin/esbuild" ]; then
    return
  fi
  command -v npm >/dev/null || { say "npm is missing: install it (Debian: apt-get install npm)"; exit 1; }
  mkdir -p "$prefix"
  printf '%s' "$manifest" >"$prefix/package.json"
  say "installing jco, componentize-js and esbuild into $prefix (from npm, once)"
  if ! (cd "$prefix" && npm install --no-audit --no-fund --loglevel=error >&2); then
    say "npm could not install them (is the npm registry reachable?)"
    exit 1
  fi
}

if [ "${1:-}" = "--test" ]; then
  shift
  [ $# -ge 1 ] || { say "usage: $0 --test RULE_DIR..."; exit 2; }
  need_node
  for rule in "$@"; do
    (cd "$rule" && node --test)
  done
  exit 0
fi

# StarlingMonkey with every WASI feature disabled, or QuickJS with WASI stubbed out (calls
# trap): either way the component imports nothing but rulebox:rule.
engine_flags=(--disable all)
if [ "${1:-}" = "--quickjs" ]; then
  shift
  engine_flags=(--backend quickjs --backend-qjs-disable-async --backend-qjs-stub-wasi)
fi
[ $# -eq 2 ] || { say "usage: $0 [--quickjs] RULE_DIR OUT.wasm  |  $0 --test RULE_DIR..."; exit 2; }
dir="$(cd "$1" && pwd)"
out="$2"
[ -f "$dir/rule.js" ] || { say "$dir has no rule.js (export default class MyRule { evaluate(req) {...} })"; exit 1; }
ensure_tools
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The entry module: the rule class as the component's `evaluate`, with the host's log.
cat >"$work/entry.js" <<JS
import * as host from "rulebox:rule/host@0.1.0";
import { exportRule } from "$here/rulebox-rule.js";
import Rule from "$dir/rule.js";
export const evaluate = exportRule(Rule, host);
JS
"$prefix/node_modules/.bin/esbuild" "$work/entry.js" --bundle --format=esm --log-level=warning \
  --external:'rulebox:rule/*' --outfile="$work/bundle.js"
mkdir -p "$(dirname "$out")"
(cd "$prefix" && ./node_modules/.bin/jco componentize "$work/bundle.js" --wit "$wit" \
  --world-name rulebox:rule/rule@0.1.0 "${engine_flags[@]}" -o "$work/rule.wasm" >/dev/null)
mv "$work/rule.wasm" "$out"
say "built $out ($(($(stat -c %s "$out") / 1024)) KiB)"
