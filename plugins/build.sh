#!/usr/bin/env bash
# Builds every rule in plugins/ to a wasm32-wasip2 component:
#   plugins/target/wasm32-wasip2/release/<crate>.wasm
# and the rules that need no WASI (see lean_crates) also as lean components, built for
# wasm32-unknown-unknown, which import nothing but rulebox:rule:
#   plugins/target/wasm32-unknown-unknown/release/<crate>.wasm
# and the Python rules in python/*/ (sdk/python/build.sh), JavaScript ones in js/*/
# (sdk/js/build.sh) and C ones in c/*/ (sdk/c/build.sh):
#   plugins/target/python/<name>.wasm, plugins/target/js/<name>.wasm, plugins/target/c/<name>.wasm
#
# Uses rustup's wasm32-wasip2 target when it is installed; otherwise the offline route:
# Debian's rustc-web + rust-web-src with -Zbuild-std, lld-19 and wasi-libc, and
# wasm-component-ld from crates.io. Installs what is missing when it can (apt-get as root,
# cargo install into $RULEBOX_TOOLS), reuses what it installed before, and otherwise says
# exactly what is missing.
#
#   plugins/build.sh            build (installing missing tools)
#   plugins/build.sh --check    only say which route would be used and what is missing
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="${RULEBOX_TOOLS:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/rulebox/tools}"
wcl_version="0.5.31"
# 64 KiB guest stack: halves per-evaluation instantiation cost (see sdk docs).
stack_flag="-Clink-arg=-zstack-size=65536"
# Rules built lean too: those that read no clocks or environment and no files but through
# rulebox_sdk::read_grant (the host's rulebox:rule/grants, not WASI). A lean rule starts
# with 128 KiB of memory (64 KiB stack, static data, the rest heap) so that a typical
# evaluation never grows it; the SDK's allocator uses that heap before growing.
lean_crates=(amount_limit risk_score sanctions_check fixture_echo)
lean_flags="\"-Clink-arg=--initial-memory=131072\""
check_only=false
[ "${1:-}" = "--check" ] && check_only=true

say() { printf 'plugins/build.sh: %s\n' "$*" >&2; }

# A cargo run from a build script or clippy inherits variables that would redirect this
# separate build; drop them.
unset RUSTC RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER RUSTFLAGS CARGO_ENCODED_RUSTFLAGS \
      CARGO_TARGET_DIR CARGO_BUILD_TARGET CARGO_MAKEFLAGS CARGO_PRIMARY_PACKAGE \
      CARGO_MANIFEST_DIR CARGO_PKG_NAME RUSTDOC __CARGO_FIX_PLZ 2>/dev/null || true

cd "$here"

# Example bundles: each examples/bundles/NAME/ (manifest, data) plus every built rule under
# rules/, assembled into target/bundles/NAME/ so it can be loaded, packed and signed.
assemble_bundles() {
  local out="$here/target/bundles" built="$here/target/wasm32-wasip2/release"
  for src in "$here"/examples/bundles/*/; do
    local name; name="$(basename "$src")"
    rm -rf "${out:?}/$name"
    mkdir -p "$out/$name/rules"
    cp -r "$src"/. "$out/$name/"
    # Each component the manifest names: rules/{python,js,c}/X.wasm from those
    # kits' builds, rules/X.wasm from the Rust crate X (its lean build where there is one, see
    # lean_crates).
    local component
    for component in $(sed -n 's/^component = "rules\/\(.*\)\.wasm"$/\1/p' "$src/bundle.toml"); do
      local wasm
      case "$component" in
        python/* | js/* | c/*) wasm="$here/target/$component.wasm" ;;
        *)
          wasm="$built/$component.wasm"
          $lean_built && [ -f "$here/target/wasm32-unknown-unknown/release/$component.wasm" ] &&
            wasm="$here/target/wasm32-unknown-unknown/release/$component.wasm"
          ;;
      esac
      mkdir -p "$out/$name/rules/$(dirname "$component")"
      cp "$wasm" "$out/$name/rules/$component.wasm"
    done
  done
  say "example bundles in $out"
}

# Rules in other languages: each LANG/NAME/ that has ENTRY (python: app.py, js: rule.js,
# c: rule.c) to target/LANG/NAME.wasm through sdk/LANG/build.sh (componentize-py; esbuild and
# jco; clang-19 and wasm-component-ld), which installs its tools the first time. Rebuilt only
# when the rule, its kit or the WIT changed: a Python or JavaScript build takes 10-20 s.
build_kit() {
  local lang="$1" entry="$2"
  local sdk="$here/../sdk/$lang" out="$here/target/$lang"
  for dir in "$here/$lang"/*/; do
    [ -f "$dir/$entry" ] || continue
    local name; name="$(basename "$dir")"
    local wasm="$out/$name.wasm"
    # Up to date when the last output made (for JS, the QuickJS build) is newer than all inputs.
    local last="$wasm"
    [ "$lang" = js ] && last="$out/$name.qjs.wasm"
    if [ -f "$last" ] && [ -z "$(find "$dir" "$sdk" "$here/../wit" -type f -newer "$last" | head -1)" ]; then
      continue
    fi
    RULEBOX_TOOLS="$tools" bash "$sdk/build.sh" "$dir" "$wasm"
    # JavaScript rules are built on QuickJS too (NAME.qjs.wasm; ~1 s).
    if [ "$lang" = js ]; then
      RULEBOX_TOOLS="$tools" bash "$sdk/build.sh" --quickjs "$dir" "$out/$name.qjs.wasm"
    fi
  done
}

# Lean builds: wasm32-unknown-unknown, linked by wasm-component-ld (with WASM_LD) into a
# component. Extra arguments go to cargo before the package list.
lean_built=false
build_lean() {
  local wasm_ld="$1"; shift
  local pkgs=()
  for crate in "${lean_crates[@]}"; do pkgs+=(-p "$crate"); done
  PATH="$tools/bin:$PATH" cargo build --release --target wasm32-unknown-unknown "$@" "${pkgs[@]}" \
    --config 'target.wasm32-unknown-unknown.linker="wasm-component-ld"' \
    --config "target.wasm32-unknown-unknown.rustflags=[\"-Clink-arg=--wasm-ld-path=$wasm_ld\",\"$stack_flag\",$lean_flags]"
  lean_built=true
}

if command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  say "using rustup's wasm32-wasip2 target"
  $check_only && exit 0
  RUSTFLAGS="$stack_flag" cargo build --release --target wasm32-wasip2 "$@"
  wasm_ld="$(command -v wasm-ld || command -v wasm-ld-19 || true)"
  if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown &&
    [ -x "$tools/bin/wasm-component-ld" ] && [ -n "$wasm_ld" ]; then
    build_lean "$wasm_ld"
  else
    say "lean builds skipped (they need rustup's wasm32-unknown-unknown target, wasm-ld and"
    say "$tools/bin/wasm-component-ld); the example bundles use the wasip2 builds"
  fi
  build_kit python app.py
  build_kit js rule.js
build_kit c rule.c
  assemble_bundles
  exit 0
fi

# --- offline route -------------------------------------------------------------------------
missing_pkgs=()
[ -x /usr/bin/rustc ] && /usr/bin/rustc --version 2>/dev/null | grep -q '^rustc 1\.\(9[5-9]\|[1-9][0-9][0-9]\)' || missing_pkgs+=(rustc-web)
[ -d /usr/lib/rustlib/src/rust/library/std ] || missing_pkgs+=(rust-web-src)
[ -x /usr/bin/wasm-ld-19 ] || missing_pkgs+=(lld-19)
[ -f /usr/lib/wasm32-wasi/libc.a ] || missing_pkgs+=(wasi-libc)

if [ ${#missing_pkgs[@]} -gt 0 ]; then
  if $check_only; then say "missing Debian packages: ${missing_pkgs[*]}"; exit 1; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${missing_pkgs[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" >&2
  else
    say "cannot build Wasm rules: rustup has no wasm32-wasip2 target, and these Debian"
    say "packages are missing: ${missing_pkgs[*]}"
    say "fix: 'rustup target add wasm32-wasip2', or as root 'apt-get install ${missing_pkgs[*]}'"
    exit 1
  fi
fi

if [ ! -x "$tools/bin/wasm-component-ld" ] || ! "$tools/bin/wasm-component-ld" --version 2>/dev/null | grep -q "$wcl_version"; then
  if $check_only; then say "missing wasm-component-ld $wcl_version in $tools"; exit 1; fi
  say "installing wasm-component-ld $wcl_version into $tools (about a minute, once)"
  cargo install "wasm-component-ld@$wcl_version" --locked --root "$tools" >&2
fi
$check_only && { say "using the offline route (Debian rustc-web + -Zbuild-std)"; exit 0; }

say "building with Debian's rustc-web and -Zbuild-std (first build compiles std: ~1 min)"
PATH="$tools/bin:$PATH" RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc \
  cargo build --release --target wasm32-wasip2 -Zbuild-std=std,panic_abort \
  --config 'target.wasm32-wasip2.linker="wasm-component-ld"' \
  --config "target.wasm32-wasip2.rustflags=[\"-Clink-arg=--wasm-ld-path=/usr/bin/wasm-ld-19\",\"-Clink-self-contained=no\",\"-Lnative=/usr/lib/wasm32-wasi\",\"$stack_flag\"]" \
  "$@"
say "building the lean rules (${lean_crates[*]}) for wasm32-unknown-unknown"
RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc build_lean /usr/bin/wasm-ld-19 -Zbuild-std=std,panic_abort
build_kit python app.py
build_kit js rule.js
build_kit c rule.c
assemble_bundles
