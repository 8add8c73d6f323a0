#!/usr/bin/env bash
# Installs what oneloop's tests need on a fresh Debian/Ubuntu machine: the
# system packages pip cannot provide (clang with libFuzzer, valgrind, curl,
# nghttp2-client (nghttp, h2load), nginx, redis-server, wrk, the zlib headers), then
# the package itself with its test extras.
#
#     scripts/install-deps.sh [test|example]
#
# `example` installs only what building and serving the examples needs.
# When VENV is set and PYTHON is its interpreter, the virtualenv is created
# first if it does not exist (the Makefile does so outside a virtualenv).
# Safe to re-run: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
MODE=${1:-test}
# Building the extension: a compiler, Python's headers, zlib's and
# nghttp2's (found with pkg-config); a virtualenv.
build=(gcc python3-dev python3-venv zlib1g-dev libnghttp2-dev pkg-config)
case "$MODE" in
    test | example) ;;
    *)
        echo "install-deps: unknown mode '$MODE' (test or example)" >&2
        exit 2
        ;;
esac

packages=(clang libclang-rt-14-dev clang-format valgrind curl nghttp2-client nginx redis-server wrk zlib1g-dev)
if [ "$MODE" = example ]; then packages=("${build[@]}"); else packages+=("${build[@]}"); fi
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
        echo "install-deps: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    echo "install-deps: installing ${missing[*]}"
    # The packages' services are not started: the tests run their own nginx
    # and redis-server on free loopback ports (a packaged nginx would take
    # port 80, and fail the install where it is taken).
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
        $sudo chmod +x "$policy"
        trap '$sudo rm -f "$policy"' EXIT
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ -n "${VENV:-}" ] && [ "$PYTHON" = "$VENV/bin/python" ] && [ ! -x "$PYTHON" ]; then
    echo "install-deps: creating the virtualenv $VENV"
    python3 -m venv "$VENV"
fi
"$PYTHON" -m pip install --quiet --upgrade pip
if [ "$MODE" = example ]; then
    "$PYTHON" -m pip install --quiet '.[examples]'
    exit 0
fi
"$PYTHON" -m pip install --quiet -e '.[test]'

# The oldest Flask and asgiref oneloop supports, beside the newest that the
# test extra installs: the one-loop tests run their apps against both.
oldest=build/compat/oldest
if [ ! -f "$oldest/.complete" ]; then
    rm -rf "$oldest"
    "$PYTHON" -m pip install --quiet --no-deps --target "$oldest" \
        "flask==2.2.5" "werkzeug==2.2.3" "asgiref==3.6.0"
    touch "$oldest/.complete"
fi
