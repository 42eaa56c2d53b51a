#!/usr/bin/env bash
# Install/consumer test.
#
# usage: tests/install/run.sh BUILD_DIR
#
# Installs the already built BUILD_DIR into a temporary prefix, then builds
# tests/install/consumer.c against that prefix four ways and runs each:
#   1. CMake, find_package(ringfiber) -> ringfiber::ringfiber (shared)
#   2. CMake, find_package(ringfiber) -> ringfiber::ringfiber_static
#   3. pkg-config --cflags --libs ringfiber (shared)
#   4. pkg-config --static --libs ringfiber, libringfiber.a forced
# The pkg-config file must find the temporary prefix by itself, and the
# static consumers must not depend on libstdc++ or Boost's shared library.
# Each must print "ok". Where the build's compiler takes
# -fstack-clash-protection, both ways must pass it on to the consumer.
# Where the build made the manual pages, man3/rf_spawn.3 and
# man3/ringfiber.3 must be installed, and `man 3 rf_spawn` (if man is
# installed) must show rf_spawn's prototype from them.
# Exit 0 on success, 77 (ctest SKIP_RETURN_CODE) when everything built but
# io_uring is unavailable so nothing could run, 1 otherwise. The temporary
# prefix and builds are removed on exit.
#
# Environment: CMAKE (default: cmake), CC (default: the build's C compiler),
# TMPDIR, KEEP=1 to keep the temporary directory for inspection.
set -euo pipefail

if [[ $# -ne 1 || ! -f $1/CMakeCache.txt ]]; then
    echo "usage: $0 BUILD_DIR (a configured and built ringfiber build tree)" >&2
    exit 1
fi
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
cmake=${CMAKE:-cmake}

cache_get() { sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt"; }
cc=${CC:-$(cache_get CMAKE_C_COMPILER)}
cc=${cc:-cc}
# A sanitized library only links into a sanitized program.
san=$(cache_get RINGFIBER_SANITIZE)
san_flags=${san:+-fsanitize=$san}
stack_clash=$(cache_get RINGFIBER_HAVE_STACK_CLASH_PROTECTION)
manpages=$(cache_get RINGFIBER_MANPAGES_BUILT)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ringfiber-install.XXXXXX")
if [[ ${KEEP:-0} == 1 ]]; then
    echo "keeping $tmp"
else
    trap 'rm -rf "$tmp"' EXIT
fi
prefix=$tmp/prefix

step() { echo "== $*"; }
# Runs a command quietly, showing its output only if it fails.
quiet() {
    if ! "$@" >"$tmp/log" 2>&1; then
        cat "$tmp/log" >&2
        echo "FAILED: $*" >&2
        exit 1
    fi
}

step "install $build -> $prefix"
quiet "$cmake" --install "$build" --prefix "$prefix"

# ---- manual pages ---------------------------------------------------------
if [[ $manpages == ON ]]; then
    # CMAKE_INSTALL_MANDIR may be share/man or man: find the page.
    page=$(find "$prefix" -path '*/man3/rf_spawn.3' | head -n1)
    if [[ -z $page ]]; then
        echo "FAILED: no man3/rf_spawn.3 installed under $prefix" >&2
        exit 1
    fi
    mandir=${page%/man3/rf_spawn.3}
    step "manual pages in $mandir"
    if [[ ! -s $mandir/man3/ringfiber.3 ]]; then
        echo "FAILED: no man3/ringfiber.3 next to $page" >&2
        exit 1
    fi
    if command -v man >/dev/null; then
        out=$(MANWIDTH=100 man -M "$mandir" 3 rf_spawn 2>&1) || {
            printf '%s\n' "$out" >&2
            echo "FAILED: man -M $mandir 3 rf_spawn" >&2
            exit 1
        }
        if ! grep -qF 'rf_task *rf_spawn(rf_fn fn, void *arg);' <<<"$out"; then
            printf '%s\n' "$out" >&2
            echo "FAILED: man 3 rf_spawn does not show rf_spawn's prototype" >&2
            exit 1
        fi
    fi
fi

# ---- CMake consumer -------------------------------------------------------
step "build consumer with find_package(ringfiber)"
quiet "$cmake" -S "$here" -B "$tmp/cmake-build" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_COMPILER="$cc" \
    -DCMAKE_C_FLAGS="$san_flags" \
    -DCMAKE_EXE_LINKER_FLAGS="$san_flags" \
    -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON \
    -DCMAKE_EXPORT_COMPILE_COMMANDS=ON
quiet "$cmake" --build "$tmp/cmake-build"
if [[ $stack_clash == 1 ]] &&
    ! grep -q -- -fstack-clash-protection "$tmp/cmake-build/compile_commands.json"; then
    echo "FAILED: the CMake package does not pass -fstack-clash-protection on" >&2
    exit 1
fi

# ---- pkg-config consumer --------------------------------------------------
# CMAKE_INSTALL_LIBDIR may be lib or lib/<multiarch>: find the file.
pc=$(find "$prefix" -name ringfiber.pc -path '*/pkgconfig/*' | head -n1)
if [[ -z $pc ]]; then
    echo "FAILED: no ringfiber.pc installed under $prefix" >&2
    exit 1
fi
export PKG_CONFIG_PATH="$(dirname "$pc")${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
# This tree was installed with --prefix, not at the configure-time prefix:
# ringfiber.pc must find it from its own place (pcfiledir), unaided.
pkgconf=(pkg-config)
step "build consumer with pkg-config ($pc)"
quiet "${pkgconf[@]}" --exists --print-errors ringfiber
read -ra cflags <<<"$("${pkgconf[@]}" --cflags ringfiber)"
read -ra libs <<<"$("${pkgconf[@]}" --libs ringfiber)"
read -ra slibs <<<"$("${pkgconf[@]}" --static --libs ringfiber)"
libdir=$("${pkgconf[@]}" --variable=libdir ringfiber)
if [[ $stack_clash == 1 && " ${cflags[*]} " != *" -fstack-clash-protection "* ]]; then
    echo "FAILED: pkg-config --cflags lacks -fstack-clash-protection: ${cflags[*]}" >&2
    exit 1
fi
# The flags must point into the install, not at some other copy.
if [[ " ${cflags[*]} " != *" -I$prefix/"* ]]; then
    echo "FAILED: pkg-config --cflags does not point into $prefix: ${cflags[*]}" >&2
    exit 1
fi
# Shared: the library is not on the default search path, hence the rpath.
quiet "$cc" $san_flags -o "$tmp/pc_shared" "$here/consumer.c" \
    "${cflags[@]}" "${libs[@]}" -Wl,-rpath,"$libdir"
# Static: -l:libringfiber.a makes the linker take the archive even though
# the .so sits next to it, so Libs.private is what resolves its needs.
for i in "${!slibs[@]}"; do
    [[ ${slibs[i]} == -lringfiber ]] && slibs[i]=-l:libringfiber.a
done
quiet "$cc" $san_flags -o "$tmp/pc_static" "$here/consumer.c" \
    "${cflags[@]}" "${slibs[@]}"

# Static consumers get no C++ runtime: libringfiber.a carries the two
# fcontext entry points instead of sending them to libboost_context.so.
# (A sanitizer's runtime brings libstdc++ of its own: there only Boost is
# looked for.)
unwanted='libstdc\+\+|libboost'
[[ -n $san ]] && unwanted='libboost'
for exe in "$tmp/cmake-build/consumer_static" "$tmp/pc_static"; do
    if ldd "$exe" | grep -E "$unwanted" >&2; then
        echo "FAILED: ${exe#"$tmp"/} depends on the libraries above" >&2
        exit 1
    fi
done

# ---- ringfiber-load ------------------------------------------------------
# Where the build had its tools: rfload installed, ringfiber-load.pc beside
# ringfiber.pc, and the library's consumer built both ways.
load_exes=()
if [[ $(cache_get RINGFIBER_BUILD_TOOLS) == ON ]]; then
    step "ringfiber-load and rfload"
    if [[ ! -x $prefix/bin/rfload ]] || ! "$prefix/bin/rfload" --version | grep -q '^rfload '; then
        echo "FAILED: no working rfload in $prefix/bin" >&2
        exit 1
    fi
    if [[ -z $(find "$prefix" -path '*/man1/rfload.1') ]]; then
        echo "FAILED: no man1/rfload.1 installed under $prefix" >&2
        exit 1
    fi
    quiet "${pkgconf[@]}" --exists --print-errors ringfiber-load
    read -ra lcflags <<<"$("${pkgconf[@]}" --cflags ringfiber-load)"
    read -ra llibs <<<"$("${pkgconf[@]}" --libs ringfiber-load)"
    quiet "$cc" $san_flags -o "$tmp/pc_load" "$here/load_consumer.c" \
        "${lcflags[@]}" "${llibs[@]}" -Wl,-rpath,"$libdir"
    for exe in "$tmp/cmake-build/load_consumer_shared" \
               "$tmp/cmake-build/load_consumer_static" "$tmp/pc_load"; do
        [[ -x $exe ]] || { echo "FAILED: $exe was not built" >&2; exit 1; }
        out=$("$exe") && [[ $out == ok ]] ||
            { echo "FAILED: ${exe#"$tmp"/} printed '$out'" >&2; exit 1; }
        echo "${exe#"$tmp"/}: ok"
    done
fi

# ---- run ------------------------------------------------------------------
ran=0
skipped=0
for exe in "$tmp/cmake-build/consumer_shared" "$tmp/cmake-build/consumer_static" \
           "$tmp/pc_shared" "$tmp/pc_static"; do
    step "run ${exe#"$tmp"/}"
    set +e
    out=$("$exe")
    rc=$?
    set -e
    if [[ $rc -eq 77 ]]; then
        skipped=$((skipped + 1))
    elif [[ $rc -ne 0 || $out != ok ]]; then
        echo "FAILED: ${exe#"$tmp"/} exited $rc, printed '$out'" >&2
        exit 1
    else
        echo "$out"
        ran=$((ran + 1))
    fi
done

if [[ $ran -eq 0 ]]; then
    echo "built and linked all consumers, but io_uring is unavailable: skipped"
    exit 77
fi
echo "install test passed ($ran ran, $skipped skipped)"
