#!/usr/bin/env bash
# The Python tests against an extension built with ASan and UBSan.
#
#   scripts/test-py-asan.sh [pytest arguments]     (default: all of tests/python)
#
# The binding layer (src/core) only runs inside CPython, so its memory errors
# show up only when real servers serve real requests: this builds oneloop._core
# with -fsanitize=address,undefined into build/asan, puts a copy of the package
# with that extension first on PYTHONPATH, and preloads the sanitizer runtimes
# into every Python process the tests start (the servers inherit the
# environment). CPython itself is not instrumented, so leak checking is off:
# the interpreter's own allocations would drown ours.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CC=${CC:-gcc}

flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"
CC=$CC CFLAGS="$flags" LDFLAGS="-fsanitize=address,undefined" \
    "$PYTHON" setup.py -q build_clib -b build/asan -t build/asan/tmp build_ext -b build/asan/lib -t build/asan/tmp \
    > build/asan.log 2>&1 || { cat build/asan.log; exit 1; }

pkg=build/asan/pkg
rm -rf "$pkg"
mkdir -p "$pkg"
cp -r src/oneloop "$pkg/"
rm -f "$pkg"/oneloop/_core*.so
cp build/asan/lib/oneloop/_core*.so "$pkg/oneloop/"

# Programs the tests run that are not Python get a clean environment: curl,
# for one, hangs with the ASan runtime preloaded into it.
mkdir -p build/asan/bin
for tool in curl h2load nghttp; do
    real=$(command -v "$tool") || continue
    printf '#!/bin/sh\nunset LD_PRELOAD\nexec %s "$@"\n' "$real" > "build/asan/bin/$tool"
    chmod +x "build/asan/bin/$tool"
done

runtimes="$($CC -print-file-name=libasan.so) $($CC -print-file-name=libubsan.so)"
[ $# -gt 0 ] || set -- tests/python
PATH="$PWD/build/asan/bin:$PATH" PYTHONPATH="$PWD/$pkg" LD_PRELOAD="$runtimes" \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$PYTHON" -m pytest -q -p no:cacheprovider "$@"
