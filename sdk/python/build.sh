#!/usr/bin/env bash
# Builds (or tests) a Python rule: a directory with `app.py` (the rule, `WitWorld =
# export(MyRule)`) and optionally `test_*.py` (pytest).
#
#   sdk/python/build.sh RULE_DIR OUT.wasm    build the component (componentize-py)
#   sdk/python/build.sh --test RULE_DIR...   run the rules' unit tests natively (pytest)
#
# Installs what it needs the first time, from PyPI, into a virtualenv under
# ${RULEBOX_TOOLS:-~/.cache/rulebox/tools}/python (componentize-py and pytest, pinned), and
# says exactly what is missing when it cannot.
set -euo pipefail
# No __pycache__ in the rule and SDK folders (componentize-py and pytest would write them).
export PYTHONDONTWRITEBYTECODE=1
here="$(cd "$(dirname "$0")" && pwd)"
wit="$(cd "$here/../../wit" && pwd)"
tools="${RULEBOX_TOOLS:-$HOME/.cache/rulebox/tools}"
venv="$tools/python"
componentize_py=0.25.1
pytest=8.3.4
say() { echo "sdk/python/build.sh: $*" >&2; }

ensure_tools() {
  if [ -x "$venv/bin/componentize-py" ] &&
    "$venv/bin/componentize-py" --version 2>/dev/null | grep -q " $componentize_py\$" &&
    "$venv/bin/python" -c 'import pytest' 2>/dev/null; then
    return
  fi
  if ! command -v python3 >/dev/null; then
    say "python3 is missing: install it (Debian: apt-get install python3 python3-venv)"
    exit 1
  fi
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))'; then
    say "python3 is $(python3 --version 2>&1 | cut -d' ' -f2); componentize-py needs 3.9 or newer"
    exit 1
  fi
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"
    say "python3 cannot create a virtualenv: install python3-venv (Debian: apt-get install python3-venv)"
    exit 1
  fi
  say "installing componentize-py $componentize_py and pytest $pytest into $venv"
  if ! "$venv/bin/pip" install -q --disable-pip-version-check \
    "componentize-py==$componentize_py" "pytest==$pytest" >&2; then
    say "pip could not install componentize-py $componentize_py from PyPI (is PyPI reachable? a proxy in PIP_INDEX_URL?)"
    exit 1
  fi
}

if [ "${1:-}" = "--test" ]; then
  shift
  [ $# -ge 1 ] || { say "usage: $0 --test RULE_DIR..."; exit 2; }
  ensure_tools
  for rule in "$@"; do
    dir="$(cd "$rule" && pwd)"
    (cd "$dir" && PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" \
      "$venv/bin/python" -m pytest -q -p no:cacheprovider)
  done
  exit 0
fi

[ $# -eq 2 ] || { say "usage: $0 RULE_DIR OUT.wasm  |  $0 --test RULE_DIR"; exit 2; }
dir="$(cd "$1" && pwd)"
out="$2"
[ -f "$dir/app.py" ] || { say "$dir has no app.py (the rule's module: WitWorld = export(MyRule))"; exit 1; }
ensure_tools
mkdir -p "$(dirname "$out")"
# Into a temporary file first: a failed build leaves no half-written component behind.
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
"$venv/bin/componentize-py" -d "$wit" -w rulebox:rule/rule@0.1.0 componentize \
  -p "$dir" -p "$here" app -o "$tmp" >/dev/null
mv "$tmp" "$out"
say "built $out ($(($(stat -c %s "$out") / 1024)) KiB)"
