#!/usr/bin/env bash
# Builds (or tests) a C rule: a directory with `rule.c` (defines rule_evaluate, and
# optionally rule_init; more .c files beside it are compiled in too) and optionally
# `test_*.c` (native unit tests, each with a main; see rulebox_test.h).
#
#   sdk/c/build.sh RULE_DIR OUT.wasm    build the component (clang-19 for wasm32-wasi,
#                                       linked into a component by wasm-component-ld)
#   sdk/c/build.sh --test RULE_DIR...   compile and run the rules' unit tests natively
#
# Needs Debian's clang-19, lld-19, wasi-libc and libclang-rt-19-dev-wasm32 (installed with
# apt-get when run as root), and wit-bindgen-cli and wasm-component-ld from crates.io
# (installed with cargo into ${RULEBOX_TOOLS:-~/.cache/rulebox/tools}/bin the first time);
# says exactly what is missing when it cannot install it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
wit="$(cd "$here/../../wit" && pwd)"
tools="${RULEBOX_TOOLS:-$HOME/.cache/rulebox/tools}"
wit_bindgen_version=0.57.1
wcl_version=0.5.31
clang=clang-19
wasm_ld=/usr/bin/wasm-ld-19
say() { echo "sdk/c/build.sh: $*" >&2; }

ensure_packages() {
  local missing=()
  command -v "$clang" >/dev/null || missing+=(clang-19)
  [ -x "$wasm_ld" ] || missing+=(lld-19)
  [ -f /usr/lib/wasm32-wasi/libc.a ] || missing+=(wasi-libc)
  [ -f /usr/lib/llvm-19/lib/clang/19/lib/wasi/libclang_rt.builtins-wasm32.a ] ||
    missing+=(libclang-rt-19-dev-wasm32)
  # Native tests run under ASan and UBSan, whose runtime this is.
  $testing && { [ -d /usr/lib/llvm-19/lib/clang/19/lib/linux ] || missing+=(libclang-rt-19-dev); }
  [ ${#missing[@]} -eq 0 ] && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  else
    say "missing Debian packages: ${missing[*]} (as root: apt-get install ${missing[*]})"
    exit 1
  fi
}

# cargo install NAME VERSION BINARY: into $tools unless that version is there (both tools
# print "NAME VERSION" for --version; plugins/build.sh installs the same wasm-component-ld).
ensure_crate() {
  local crate="$1" version="$2" bin="$3"
  if [ -x "$tools/bin/$bin" ] && "$tools/bin/$bin" --version 2>/dev/null | grep -q " $version\$"; then
    return
  fi
  command -v cargo >/dev/null || { say "cargo is missing: it installs $crate (rustup.rs)"; exit 1; }
  say "installing $crate $version into $tools (once; about 2 minutes on 2 cores)"
  cargo install -q "$crate@$version" --locked --root "$tools" >&2 ||
    { say "cargo could not install $crate $version from crates.io"; exit 1; }
}

# Bindings for sdk/c/wit/kit.wit (rulebox:rule's `rule` and `init` in one world) into $1.
bindings() {
  local gen="$1"
  mkdir -p "$gen/wit/deps/rule"
  cp "$here/wit/kit.wit" "$gen/wit/"
  cp "$wit"/*.wit "$gen/wit/deps/rule/"
  local log
  log="$("$tools/bin/wit-bindgen" c "$gen/wit" --world kit --out-dir "$gen" 2>&1)" ||
    { echo "$log" >&2; say "wit-bindgen could not generate the bindings"; exit 1; }
}

sources() {
  local dir="$1"
  find "$dir" -maxdepth 1 -name '*.c' ! -name 'test_*.c' | sort
}

gen="$(mktemp -d)"
trap 'rm -rf "$gen"' EXIT
kit=("$here/rulebox_rule.c" "$here/rulebox_json.c")
testing=false
[ "${1:-}" = "--test" ] && testing=true

if $testing; then
  shift
  [ $# -ge 1 ] || { say "usage: $0 --test RULE_DIR..."; exit 2; }
  ensure_packages
  ensure_crate wit-bindgen-cli "$wit_bindgen_version" wit-bindgen
  bindings "$gen"
  # Sanitizers catch the memory errors a C rule can make, when this clang has their runtime.
  san=()
  if echo 'int main(void){return 0;}' |
    "$clang" -x c - -fsanitize=address,undefined -o "$gen/probe" 2>/dev/null; then
    san=(-fsanitize=address,undefined -fno-sanitize-recover=undefined)
  else
    say "no sanitizer runtime for $clang here (libclang-rt-19-dev); testing without ASan/UBSan"
  fi
  for rule in "$@"; do
    dir="$(cd "$rule" && pwd)"
    [ -f "$dir/rule.c" ] || { say "$dir has no rule.c"; exit 1; }
    found=false
    for test in "$dir"/test_*.c; do
      [ -f "$test" ] || continue
      found=true
      exe="$gen/$(basename "$dir")-$(basename "$test" .c)"
      mapfile -t srcs < <(sources "$dir")
      "$clang" -std=gnu11 -g -O1 -Wall -Wextra -Wno-unused-parameter "${san[@]}" \
        -I "$here" -I "$gen" "${srcs[@]}" "$test" "${kit[@]}" "$here/rulebox_test.c" \
        "$gen/kit.c" -Wno-unknown-attributes -lm -o "$exe"
      (cd "$dir" && ASAN_SYMBOLIZER_PATH="$(command -v llvm-symbolizer-19 || true)" "$exe") || { say "$test failed"; exit 1; }
    done
    $found || say "$dir has no test_*.c"
  done
  exit 0
fi

[ $# -eq 2 ] || { say "usage: $0 RULE_DIR OUT.wasm  |  $0 --test RULE_DIR..."; exit 2; }
dir="$(cd "$1" && pwd)"
out="$2"
[ -f "$dir/rule.c" ] || { say "$dir has no rule.c (the rule: void rule_evaluate(rb_ctx *cx))"; exit 1; }
ensure_packages
ensure_crate wit-bindgen-cli "$wit_bindgen_version" wit-bindgen
ensure_crate wasm-component-ld "$wcl_version" wasm-component-ld
bindings "$gen"
mapfile -t srcs < <(sources "$dir")
mkdir -p "$(dirname "$out")"
# Into a temporary file first: a failed build leaves no half-written component behind.
tmp="$out.tmp.$$"
trap 'rm -rf "$gen" "$tmp"' EXIT
# A reactor (no main); a 64 KiB stack, as the Rust SDK's builds; wasm-component-ld links the
# core module and wraps it into a component (with WASI's adapter only if the rule uses WASI).
"$clang" --target=wasm32-wasi -std=gnu11 -O2 -Wall -Wextra -Wno-unused-parameter \
  -mexec-model=reactor -I "$here" -I "$gen" "${srcs[@]}" "${kit[@]}" "$gen/kit.c" \
  "$gen/kit_component_type.o" \
  -fuse-ld="$tools/bin/wasm-component-ld" -Wl,--wasm-ld-path="$wasm_ld" \
  -Wl,-z,stack-size=65536 -o "$tmp"
mv "$tmp" "$out"
say "built $out ($(($(stat -c %s "$out") / 1024)) KiB)"
