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
for v in "$@"; do
    start=$SECONDS
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
    # carries the ABI tag, so every version's build sits side by side).
    ONELOOP_WERROR=1 "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        -e '.[test]' > "build/py$v-install.log" 2>&1 || {
        tail -40 "build/py$v-install.log"
        echo "test-py-versions: installing oneloop on CPython $v failed" >&2
        summary+=("$v: BUILD FAILED")
        status=1
        continue
    }
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
    # Run against this checkout's sources whatever PYTHONPATH says.
    # PYTEST_ARGS: more pytest options (-x, --durations=10, -k ...).
    # shellcheck disable=SC2086
    if env -u PYTHONPATH -u VIRTUAL_ENV "$venv/bin/python" -m pytest -q -p no:cacheprovider \
        ${PYTEST_ARGS:-} "${TESTS[@]}"; then
        summary+=("$v: passed in $((SECONDS - start))s")
    else
        summary+=("$v: FAILED after $((SECONDS - start))s")
        status=1
    fi
done
printf 'test-py-versions: %s\n' "${summary[@]}"
exit $status
