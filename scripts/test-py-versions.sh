#!/usr/bin/env bash
# The HTTP, ASGI, WSGI, one-loop and heartbeat tests on every supported
# CPython besides the one the rest of `make test` runs on.
#
#   scripts/test-py-versions.sh [VERSION ...]       (default: 3.12 3.13)
#
# For each version: the interpreter pyenv installed (the highest X.Y.Z of
# it), a virtualenv in build/py<X.Y> (kept between runs; pip only adds what
# is missing), oneloop installed into it editable with its test extras and
# its extension compiled with warnings as errors, then the tests. A version
# that is not installed is an error, not a skip: requires-python promises it.
set -euo pipefail
cd "$(dirname "$0")/.."

# --setup-only: make the virtualenvs and builds, run nothing (make test does
# this beside the Autobahn run; the tests come later, on a quiet machine).
setup_only=0
if [ "${1:-}" = --setup-only ]; then
    setup_only=1
    shift
fi
[ $# -gt 0 ] || set -- 3.12 3.13
# The tests every interpreter must pass: the wire as apps see it, both
# interfaces, the one-loop bridge, the supervisor's heartbeat.
TESTS=(tests/python/test_http.py tests/python/test_asgi_*.py tests/python/test_wsgi.py
    tests/python/test_one_loop*.py tests/python/test_heartbeat.py
    tests/python/test_asyncio_private.py)

if command -v pyenv > /dev/null; then
    root=$(pyenv root)
else
    root=${PYENV_ROOT:-$HOME/.pyenv}
fi

find_python() { # the highest installed X.Y.Z of X.Y, or nothing
    local v=$1 dir
    dir=$(ls -d "$root/versions/$v".[0-9]* 2> /dev/null | sort -V | tail -1)
    [ -n "$dir" ] && [ -x "$dir/bin/python$v" ] && echo "$dir/bin/python$v"
}

status=0
summary=()
ready=()
# First every interpreter's virtualenv and build, one at a time (pip and the
# compiler are CPU-bound, and the editable builds share src/oneloop).
for v in "$@"; do
    python=$(find_python "$v") || {
        echo "test-py-versions: CPython $v is not installed under $root/versions" \
            "(install it: pyenv install $v)" >&2
        summary+=("$v: NOT INSTALLED")
        status=1
        continue
    }
    venv=build/py$v
    echo "== CPython $v: $python -> $venv"
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    # Editable: the extension is compiled into src/oneloop (its file name
    # carries the ABI tag, so every version's build sits side by side). A
    # build newer than every source and the project's metadata is kept.
    stamp=$venv/.oneloop-built
    if [ -f "$stamp" ] && [ -z "$(find src setup.py pyproject.toml -newer "$stamp" \
        -type f -not -path '*/__pycache__*' -not -path '*.egg-info*' -not -name '*.so' -print -quit)" ]; then
        echo "   (built already, sources unchanged since)"
    elif ONELOOP_WERROR=1 "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        -e '.[test]' > "build/py$v-install.log" 2>&1; then
        touch "$stamp"
    else
        tail -40 "build/py$v-install.log"
        echo "test-py-versions: installing oneloop on CPython $v failed" >&2
        summary+=("$v: BUILD FAILED")
        status=1
        continue
    fi
    # The oldest Flask and asgiref the one-loop tests also run against (pure
    # Python, shared by every version; scripts/install-deps.sh makes the
    # same when it runs first).
    oldest=build/compat/oldest
    if [ ! -f "$oldest/.complete" ]; then
        rm -rf "$oldest"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
            --target "$oldest" "flask==2.2.5" "werkzeug==2.2.3" "asgiref==3.6.0"
        touch "$oldest/.complete"
    fi
    ready+=("$v")
done

if [ "$setup_only" = 1 ]; then
    [ "$status" = 0 ] && echo "test-py-versions: ${ready[*]} ready" || printf 'test-py-versions: %s\n' "${summary[@]}"
    exit $status
fi

# Then the tests, one version after the other; PY_PARALLEL=1 runs them side
# by side. Not the default: on a loaded 2-core machine side by side took
# longer (16.5 min against 14.5) and failed latency and loop-stall
# assertions that pass one at a time. Each version's output goes to
# build/py<X.Y>-test.log and is printed once all are done.
run_tests() { # version -> its pytest exit status
    # Run against this checkout's sources whatever PYTHONPATH says.
    # PYTEST_ARGS: more pytest options (-x, --durations=10, -k ...).
    # shellcheck disable=SC2086
    env -u PYTHONPATH -u VIRTUAL_ENV "build/py$1/bin/python" -m pytest -q -p no:cacheprovider \
        ${PYTEST_ARGS:-} "${TESTS[@]}" > "build/py$1-test.log" 2>&1
}
start=$SECONDS
declare -A pids
for v in "${ready[@]}"; do
    if [ "${PY_PARALLEL:-0}" = 1 ]; then
        run_tests "$v" &
        pids[$v]=$!
    else
        code=0
        run_tests "$v" || code=$?
        echo "$code" > "build/py$v-test.status"
    fi
done
for v in "${ready[@]}"; do
    if [ -n "${pids[$v]:-}" ]; then
        code=0
        wait "${pids[$v]}" || code=$?
    else
        code=$(cat "build/py$v-test.status")
    fi
    echo "== CPython $v tests"
    cat "build/py$v-test.log"
    if [ "$code" = 0 ]; then
        summary+=("$v: passed")
    else
        summary+=("$v: FAILED")
        status=1
    fi
done
summary+=("tests took $((SECONDS - start))s")
printf 'test-py-versions: %s\n' "${summary[@]}"
exit $status
