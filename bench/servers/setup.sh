#!/usr/bin/env bash
# Prepares a fresh Debian/Ubuntu machine for the server benchmarks, and is
# cheap to re-run: it only does what is missing or out of date.
#
#  * the load generators and profilers from the distribution (wrk, h2load,
#    valgrind, strace), and what building oneloop needs (nghttp2's headers);
#  * a virtualenv (bench/.venv, or $BENCH_VENV) made with $PYTHON, holding
#    the pinned peers of requirements.txt and oneloop built from this
#    checkout (its working tree, or the commit $BENCH_ONELOOP_REF, e.g. HEAD,
#    to measure a committed state while the tree is being edited), so every
#    server runs on the same interpreter;
#  * the C tools: the floor server, the fixed-rate client and the WebSocket
#    client.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PYTHON=${PYTHON:-python3}
VENV=${BENCH_VENV:-$ROOT/bench/.venv}
BIN=${BENCH_TOOLS:-$ROOT/build/bench/bin}

install_packages() {
    local missing=() pair
    for pair in wrk:wrk h2load:nghttp2-client valgrind:valgrind callgrind_control:valgrind \
        strace:strace taskset:util-linux cc:gcc pkg-config:pkg-config openssl:openssl; do
        command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
    done
    # oneloop's build needs nghttp2's headers (HTTP/2).
    dpkg -s libnghttp2-dev >/dev/null 2>&1 || missing+=(libnghttp2-dev)
    [ ${#missing[@]} -eq 0 ] && return
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "bench: need root to install ${missing[*]}" >&2; exit 1; }
        sudo=sudo
    fi
    echo "bench: installing ${missing[*]}"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# A digest of the files that make up oneloop's build, to rebuild only on change.
source_digest() {
    if [ -n "${BENCH_ONELOOP_REF:-}" ]; then
        git -C "$ROOT" rev-parse "$BENCH_ONELOOP_REF^{tree}"
        return
    fi
    (cd "$ROOT" && find pyproject.toml setup.py src -type f \
        \( -name '*.c' -o -name '*.h' -o -name '*.py' -o -name '*.pyi' -o -name '*.toml' \) \
        -not -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum | sha256sum)
}

# What was built, for the report: a commit, or the working tree and its base.
source_description() {
    if [ -n "${BENCH_ONELOOP_REF:-}" ]; then
        echo "commit $(git -C "$ROOT" rev-parse --short "$BENCH_ONELOOP_REF")"
    elif git -C "$ROOT" rev-parse --short HEAD >/dev/null 2>&1; then
        local changed=""
        git -C "$ROOT" diff --quiet HEAD -- src setup.py pyproject.toml || changed=" + local changes"
        echo "commit $(git -C "$ROOT" rev-parse --short HEAD)$changed"
    else
        echo "source tree"
    fi
}

install_python() {
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    local stamp="$VENV/.bench-requirements"
    if ! cmp -s "$HERE/requirements.txt" "$stamp"; then
        echo "bench: installing the peers into $VENV"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -r "$HERE/requirements.txt"
        cp "$HERE/requirements.txt" "$stamp"
    fi
    local digest
    digest=$(source_digest)
    if [ "$digest" != "$(cat "$VENV/.bench-oneloop" 2>/dev/null)" ]; then
        echo "bench: building oneloop into $VENV"
        # Build from a copy: an in-tree build would write build/ and the
        # extension next to the sources, under the feet of an editable install.
        local tmp
        tmp=$(mktemp -d)
        if [ -n "${BENCH_ONELOOP_REF:-}" ]; then
            git -C "$ROOT" archive "$BENCH_ONELOOP_REF" pyproject.toml setup.py README.md src |
                tar -C "$tmp" -xf -
        else
            (cd "$ROOT" && tar -cf - --exclude='*.so' --exclude='*.egg-info' \
                --exclude=__pycache__ pyproject.toml setup.py README.md src) | tar -C "$tmp" -xf -
        fi
        # --no-deps: its one dependency, uvloop, is pinned in requirements.txt.
        "$VENV/bin/python" -m pip install --quiet --force-reinstall --no-deps "$tmp" \
            >"$tmp/pip.log" 2>&1 || { cat "$tmp/pip.log" >&2; rm -rf "$tmp"; exit 1; }
        rm -rf "$tmp"
        echo "$digest" >"$VENV/.bench-oneloop"
        source_description >"$VENV/.bench-oneloop-source"
    fi
}

build_tools() {
    mkdir -p "$BIN"
    local tool
    for tool in floor_server rate_client ws_client; do
        if [ ! -x "$BIN/$tool" ] || [ "$ROOT/bench/$tool.c" -nt "$BIN/$tool" ]; then
            cc -std=c11 -O2 -Wall -Wextra -o "$BIN/$tool" "$ROOT/bench/$tool.c"
        fi
    done
}

install_packages
install_python
build_tools
