# oneloop developer entry points. `make help` lists them.
#
# The Python package is built by pip (setup.py); this Makefile builds the
# pure-C wire layer on its own for the C tests, fuzzers and benchmarks,
# which need compiler flags (sanitizers, libFuzzer) a package build must not
# carry.

SHELL       := bash
# Inside a virtualenv everything runs in it. Outside one, in .venv here,
# which `make deps` / `make example` create: Debian and other distributions
# refuse pip installs into the system Python (PEP 668).
VENV        ?= $(CURDIR)/.venv
ifeq ($(VIRTUAL_ENV),)
PYTHON      ?= $(VENV)/bin/python
else
PYTHON      ?= python3
endif
CC          ?= cc
CLANG       ?= clang
BUILD       ?= build
FUZZ_SECONDS ?= 20
DIFF_FUZZ_INPUTS ?= 50000

WIRE_SRC    := $(wildcard src/wire/*.c)
WIRE_HDR    := $(wildcard src/wire/*.h)
TEST_SRC    := $(wildcard tests/c/*.c) src/core/reactor.c
TEST_HDR    := $(wildcard tests/c/*.h) src/core/reactor.h $(BUILD)/gen/llhttp_cases.h
C_FILES     := $(WIRE_SRC) $(WIRE_HDR) $(wildcard tests/c/*.[ch]) $(wildcard tests/fuzz/*.c) \
               $(wildcard bench/*.c) $(wildcard src/core/*.[ch]) $(wildcard tests/python/apps/*.c)

STD         := -std=c11 -D_POSIX_C_SOURCE=200809L
WARN        := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
               -Wconversion -Wno-sign-conversion
SANITIZE    := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_FLAGS  := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -g -O1

.PHONY: help all deps example test test-c test-c-asan test-c-portable test-c-valgrind fuzz fuzz-smoke fuzz-corpus diff-fuzz \
        bench bench-parser bench-servers bench-smoke bench-compare bench-trees bench-instructions bench-hostile bench-soak test-dist test-py test-autobahn test-py-versions test-py-asan test-py-asan-core test-py-valgrind format lint lint-ext clean

help:
	@echo "make example      install oneloop (in .venv outside a virtualenv) and serve examples/flask_async.py"
	@echo "make test         install what is missing, then every test (C, fuzz smoke, lint, Python)"
	@echo "make deps         install system packages and the package itself (editable)"
	@echo "make test-c       C tests of the wire layer under ASan+UBSan, then under valgrind"
	@echo "make fuzz         run each libFuzzer target for FUZZ_SECONDS (default $(FUZZ_SECONDS))"
	@echo "make diff-fuzz    oneloop's parser against llhttp (httptools) and h11 on DIFF_FUZZ_INPUTS"
	@echo "                  mutated requests, fixed seed; fails on a disagreement not judged"
	@echo "                  (DIFF_FUZZ_SECONDS=N: run N seconds instead)"
	@echo "make bench        parser micro-benchmark (ns per request)"
	@echo "make bench-servers  oneloop against its peers, writes docs/benchmarks.md (BENCH_QUICK=1: shorter)"
	@echo "                  ONLY=\"KEY ...\": only those parts (ONLY=ws: the WebSocket ones, which rewrite"
	@echo "                  only their own section of docs/benchmarks.md)"
	@echo "make bench-hostile  slowloris, non-readers, unread uploads, no free fds: oneloop and its peers"
	@echo "make bench-soak   SOAK_REQUESTS (default 1000000) requests with failures and hang-ups, RSS curve"
	@echo "make bench-smoke  every benchmark scenario for about a second (proves the harness works)"
	@echo "make bench-compare BASE=<commit>  this oneloop against commit BASE's, same run"
	@echo "make bench-instructions BASE=<commit>  instructions per plaintext request (callgrind), this against BASE"
	@echo "make test-py      Python tests (real server, real sockets)"
	@echo "make test-py-versions  the HTTP, ASGI, WSGI and one-loop tests on CPython 3.12 and 3.13 (pyenv)"
	@echo "make test-py-asan the Python tests against an ASan+UBSan build of the extension"
	@echo "make test-autobahn  the Autobahn TestSuite's WebSocket cases (part of test-py)"
	@echo "make test-py-asan-core  the core's adversarial tests (stale events, ...) under ASan"
	@echo "make test-py-valgrind  servers under valgrind with a mix of traffic"
	@echo "make test-dist    sdist and wheels (manylinux too), installed in clean venvs, serving"
	@echo "make format       clang-format and ruff format, in place"
	@echo "make lint         formatting, ruff, and -Werror builds with gcc and clang"

all: $(BUILD)/libolwire.a

deps:
	PYTHON=$(PYTHON) VENV=$(VENV) scripts/install-deps.sh

# The README's first command: what the example needs, then the example.
example:
	PYTHON=$(PYTHON) VENV=$(VENV) scripts/install-deps.sh example
	$(PYTHON) -m oneloop --app-dir examples flask_async:app

# The Autobahn cases (some 10 minutes of a WebSocket client and the server,
# judged on what goes over the wire, not on time) run beside the C tests,
# fuzzing, the packaging test, the core's ASan tests and the other
# Pythons' builds, which keep one core busy; the Python suites, whose
# latency checks want the machine to themselves, come after. The
# Autobahn configurations run as two processes (the full one, and the two
# quick ones), so that both cores stay busy once the other chain is done.
# Whatever fails, the Autobahn runs are waited for and their output shown.
test: deps
	$(MAKE) --no-print-directory lint
	@mkdir -p $(BUILD)
	@timed() { local t0=$$SECONDS code; "$$@"; code=$$?; echo "== $$* took $$((SECONDS - t0)) s"; return $$code; }; \
	start=$$SECONDS; \
	$(AUTOBAHN) -k tcp-uvloop > $(BUILD)/test-autobahn-full.log 2>&1 & autobahn_full=$$!; \
	$(AUTOBAHN) -k 'not tcp-uvloop' > $(BUILD)/test-autobahn-quick.log 2>&1 & autobahn_quick=$$!; \
	echo "test-autobahn: running beside the C tests, fuzzing and test-dist"; \
	status=0; \
	{ timed $(MAKE) --no-print-directory test-c && timed $(MAKE) --no-print-directory fuzz && \
	  timed $(MAKE) --no-print-directory diff-fuzz && timed $(MAKE) --no-print-directory test-dist && \
	  timed $(MAKE) --no-print-directory test-py-asan-core && \
	  timed scripts/test-py-versions.sh --setup-only $(PY_VERSIONS); } || status=$$?; \
	autobahn_status=0; \
	for run in full quick; do \
	  if [ $$run = full ]; then wait $$autobahn_full; else wait $$autobahn_quick; fi || autobahn_status=1; \
	  echo "== test-autobahn ($$run) done at $$((SECONDS - start)) s"; \
	  tail -30 $(BUILD)/test-autobahn-$$run.log; \
	done; \
	[ $$status -eq 0 ] && [ $$autobahn_status -eq 0 ]
	@start=$$SECONDS; $(MAKE) --no-print-directory test-py \
		PYTEST_ARGS="--ignore=tests/python/test_autobahn.py -m 'not asan_stress'"; \
	code=$$?; echo "== test-py took $$((SECONDS - start)) s"; exit $$code
	@start=$$SECONDS; $(MAKE) --no-print-directory test-py-versions; \
	code=$$?; echo "== test-py-versions took $$((SECONDS - start)) s"; exit $$code

# ---------------------------------------------------------------- wire layer

$(BUILD)/wire/%.o: src/wire/%.c $(WIRE_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(STD) $(WARN) -O2 -fPIC -c $< -o $@

$(BUILD)/libolwire.a: $(patsubst src/wire/%.c,$(BUILD)/wire/%.o,$(WIRE_SRC))
	ar rcs $@ $^

# ---------------------------------------------------------------- C tests

$(BUILD)/gen/llhttp_cases.h: tests/c/gen_llhttp.py tests/data/llhttp-requests.json
	@mkdir -p $(dir $@)
	$(PYTHON) tests/c/gen_llhttp.py tests/data/llhttp-requests.json $@

$(BUILD)/test_wire_asan: $(WIRE_SRC) $(TEST_SRC) $(WIRE_HDR) $(TEST_HDR)
	$(CC) $(STD) $(WARN) -Wno-missing-prototypes $(SANITIZE) -g -O1 -I$(BUILD)/gen -Isrc/core \
		$(WIRE_SRC) $(TEST_SRC) -lm -lz -o $@

$(BUILD)/test_wire: $(WIRE_SRC) $(TEST_SRC) $(WIRE_HDR) $(TEST_HDR)
	$(CC) $(STD) $(WARN) -Wno-missing-prototypes -g -O1 -I$(BUILD)/gen -Isrc/core \
		$(WIRE_SRC) $(TEST_SRC) -lm -lz -o $@

test-c-asan: $(BUILD)/test_wire_asan
	$(BUILD)/test_wire_asan

test-c-valgrind: $(BUILD)/test_wire
	valgrind --quiet --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=all \
		$(BUILD)/test_wire > /dev/null

# The same tests without SSE2, through the portable 8-byte word scans.
$(BUILD)/test_wire_portable: $(WIRE_SRC) $(TEST_SRC) $(WIRE_HDR) $(TEST_HDR)
	$(CC) $(STD) $(WARN) -Wno-missing-prototypes -U__SSE2__ $(SANITIZE) -g -O1 -I$(BUILD)/gen -Isrc/core \
		$(WIRE_SRC) $(TEST_SRC) -lm -lz -o $@

test-c-portable: $(BUILD)/test_wire_portable
	$(BUILD)/test_wire_portable > /dev/null

test-c: test-c-asan test-c-portable test-c-valgrind

# ---------------------------------------------------------------- fuzzing

FUZZERS := request chunked stream ws_frame utf8
FUZZ_HELPERS := tests/c/stream.c tests/c/ws_stream.c tests/c/testlib.c

$(BUILD)/fuzz/%: tests/fuzz/fuzz_%.c $(FUZZ_HELPERS) $(WIRE_SRC) $(WIRE_HDR) $(wildcard tests/c/*.h)
	@mkdir -p $(dir $@)
	$(CLANG) $(STD) $(WARN) -Wno-missing-prototypes $(FUZZ_FLAGS) $< $(FUZZ_HELPERS) \
		$(WIRE_SRC) -lz -o $@

# Seed corpora come from the test inputs, so fuzzing starts from every rule;
# the WebSocket targets take their tokens from ws.dict, the others http.dict.
fuzz-corpus: $(BUILD)/test_wire
	rm -rf $(BUILD)/fuzz-seeds
	$(BUILD)/test_wire --seeds $(BUILD)/fuzz-seeds

fuzz: $(addprefix $(BUILD)/fuzz/,$(FUZZERS)) fuzz-corpus
	@for f in $(FUZZERS); do \
		mkdir -p $(BUILD)/fuzz-corpus/$$f $(BUILD)/fuzz-artifacts; \
		case $$f in ws_frame|utf8) dict=tests/fuzz/ws.dict;; *) dict=tests/fuzz/http.dict;; esac; \
		echo "fuzzing $$f for $(FUZZ_SECONDS)s"; \
		$(BUILD)/fuzz/$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			-dict=$$dict -artifact_prefix=$(BUILD)/fuzz-artifacts/$$f- \
			$(BUILD)/fuzz-corpus/$$f $(BUILD)/fuzz-seeds/$$f > $(BUILD)/fuzz-$$f.log 2>&1; \
		status=$$?; \
		grep -E "^(Done|stat::number_of_executed_units|SUMMARY)" $(BUILD)/fuzz-$$f.log; \
		if [ $$status -ne 0 ]; then tail -40 $(BUILD)/fuzz-$$f.log; exit 1; fi; \
	done

# The same bytes through oneloop's parser, llhttp and h11 (scripts/diff_fuzz.py):
# every disagreement must be a class judged there and in docs/architecture.md.
# The seed is fixed, so the default run is deterministic (about 5 s).
diff-fuzz:
	$(PYTHON) scripts/diff_fuzz.py --seed 1 --check \
		$(if $(DIFF_FUZZ_SECONDS),--seconds $(DIFF_FUZZ_SECONDS),--inputs $(DIFF_FUZZ_INPUTS))

# ---------------------------------------------------------------- benchmarks

$(BUILD)/bench_parser: bench/bench_parser.c $(BUILD)/libolwire.a
	$(CC) $(STD) $(WARN) -Wno-missing-prototypes -O2 $< $(BUILD)/libolwire.a -lz -o $@

bench-parser: $(BUILD)/bench_parser
	$(BUILD)/bench_parser

bench: bench-parser

# Servers against their peers: bench/servers/setup.sh installs what is missing
# (wrk, h2load, valgrind, a virtualenv with the peers), run.py measures and
# writes docs/benchmarks.md. The smoke run never fails on a number.
BENCH_VENV  ?= bench/.venv
BENCH_SETUP := PYTHON=$(PYTHON) BENCH_VENV=$(abspath $(BENCH_VENV)) bench/servers/setup.sh

bench-servers:
	$(BENCH_SETUP)
	$(BENCH_VENV)/bin/python bench/servers/run.py $(if $(filter 1,$(BENCH_QUICK)),--quick) \
		$(if $(filter 1,$(SMOKE)),--smoke) $(if $(ONLY),--only $(ONLY))

# Hostile clients against oneloop and its peers (bench/hostile.py), and the
# long soak: make bench-soak [SOAK_REQUESTS=1000000] [SOAK_INTERFACE=asgi]
bench-hostile:
	$(BENCH_SETUP)
	$(BENCH_VENV)/bin/python bench/hostile.py $(if $(filter 1,$(BENCH_QUICK)),--quick) $(if $(ONLY),--only $(ONLY))

SOAK_REQUESTS  ?= 1000000
SOAK_INTERFACE ?= asgi
bench-soak:
	$(BENCH_SETUP)
	$(BENCH_VENV)/bin/python bench/hostile.py --soak $(SOAK_REQUESTS) --interface $(SOAK_INTERFACE)

bench-smoke:
	$(BENCH_SETUP)
	$(BENCH_VENV)/bin/python bench/servers/run.py --smoke $(if $(ONLY),--only $(ONLY))

# This checkout's oneloop against the build of commit BASE, in one run (a
# refactor's before/after table): make bench-compare BASE=<commit> [BENCH_QUICK=1]
BASE_TREE := $(BUILD)/bench-base
THIS_TREE := $(BUILD)/bench-this
bench-trees:
	@test -n "$(BASE)" || { echo "$(MAKECMDGOALS): say which commit, BASE=<commit>" >&2; exit 2; }
	$(BENCH_SETUP)
	rm -rf $(BASE_TREE) $(THIS_TREE) && mkdir -p $(BASE_TREE) $(THIS_TREE)
	git archive $(BASE) | tar -x -C $(BASE_TREE)
	cp -r setup.py pyproject.toml README.md src $(THIS_TREE)/
	rm -f $(THIS_TREE)/src/oneloop/_core*.so
	for tree in $(BASE_TREE) $(THIS_TREE); do \
		(cd $$tree && $(abspath $(BENCH_VENV))/bin/python setup.py -q build_clib build_ext --inplace) \
			|| exit 1; \
	done

bench-compare: bench-trees
	$(BENCH_VENV)/bin/python bench/servers/compare.py $(BASE_TREE)/src --this $(THIS_TREE)/src \
		$(if $(filter 1,$(BENCH_QUICK)),--quick) $(if $(ONLY),--only $(ONLY))

# Instructions per plaintext request (callgrind), this checkout against the
# build of BASE, with and without metrics served: for changes that cost a
# few percent, below what a load run can tell. make bench-instructions BASE=<commit>
bench-instructions: bench-trees
	$(BENCH_VENV)/bin/python bench/servers/instructions.py $(BASE_TREE)/src --this $(THIS_TREE)/src

# ---------------------------------------------------------------- Python

test-py:
	$(PYTHON) -m pytest tests/python -q $(PYTEST_ARGS)

# The Autobahn TestSuite's cases (tests/python/test_autobahn.py), alone.
AUTOBAHN = $(PYTHON) -m pytest tests/python/test_autobahn.py -q
test-autobahn:
	$(AUTOBAHN)

# Every other supported CPython (pyenv's 3.12 and 3.13): a virtualenv each in
# build/py<X.Y>, oneloop built with warnings as errors, and the HTTP, ASGI,
# WSGI, one-loop, heartbeat and private-asyncio tests. A missing interpreter
# fails the run. PY_VERSIONS="3.13" for one of them.
PY_VERSIONS ?= 3.12 3.13
test-py-versions:
	scripts/test-py-versions.sh $(PY_VERSIONS)

# The binding layer's memory checks: the whole Python suite against an
# ASan+UBSan build of the extension (~4x slower), and valgrind on real
# servers serving a mix of traffic.
test-py-asan:
	PYTHON=$(PYTHON) scripts/test-py-asan.sh

test-py-valgrind:
	$(PYTHON) scripts/valgrind_smoke.py

# The sdist and wheels, built (the wheel from the sdist), repaired to
# manylinux, installed in clean virtualenvs and serving an app.
test-dist:
	PYTHON=$(PYTHON) scripts/test-dist.sh

# The connection core's adversarial tests against the ASan+UBSan build: events
# for connections freed earlier in the same batch, thousands of times over,
# and the other defects of the core's read-through. A use of freed memory
# shows only there; part of `make test`.
CORE_ASAN_TESTS := tests/python/test_core_events.py tests/python/test_http2_edges.py $(wildcard tests/python/test_core_defects.py)
test-py-asan-core:
	PYTHON=$(PYTHON) scripts/test-py-asan.sh $(CORE_ASAN_TESTS)

# ---------------------------------------------------------------- hygiene

format:
	clang-format -i $(C_FILES)
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

lint:
	clang-format --dry-run -Werror $(C_FILES)
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m ruff check .
	$(PYTHON) scripts/check_layers.py
	$(MAKE) --no-print-directory clean-wire
	$(MAKE) --no-print-directory CC=gcc $(BUILD)/libolwire.a
	$(MAKE) --no-print-directory clean-wire
	$(MAKE) --no-print-directory CC=clang $(BUILD)/libolwire.a
	$(MAKE) --no-print-directory lint-ext

# The extension module as pip builds it, with warnings as errors, by gcc and
# by clang: each warns about things the other does not (clang's -Wshadow sees
# globals of system headers, such as unistd.h's environ). Built out of tree,
# so the checkout's in-place build is left alone.
lint-ext:
	@for cc in gcc clang; do \
		echo "building the extension with $$cc -Werror"; \
		out=$(BUILD)/ext-$$cc; rm -rf $$out; \
		CC=$$cc ONELOOP_WERROR=1 $(PYTHON) setup.py -q build_clib -b $$out \
			build_ext -b $$out -t $$out/tmp 2>&1 | grep -v -e _BetaConfiguration -e 'warnings.warn(msg'; \
		test -n "$$(ls $$out/oneloop/_core*.so 2>/dev/null)" || { echo "lint-ext: the $$cc build failed" >&2; exit 1; }; \
	done

clean-wire:
	rm -rf $(BUILD)/wire $(BUILD)/libolwire.a

clean:
	rm -rf $(BUILD)
