# datafed: one command per job. Every target creates .venv from python3 on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
K      ?=

.PHONY: setup sysdeps native demo test lint types protocheck unit benchsmoke bench fuzz clean

$(STAMP): pyproject.toml constraints.txt
	@echo "==> creating $(VENV) and installing datafed with the tested constraints"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# torch first and exactly pinned, so no resolver step can pull a CUDA build.
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) sysdeps native

# The C loop of Paillier encryption (setup.py, datafed/hazmat/_djn_native.c): pip builds
# it with the install where gcc and GMP's header are present; this rebuilds it in place
# when its source changes, or once sysdeps has installed libgmp-dev. Without it the same
# products run in Python (about 0.6x as fast); the test suite fails then unless DATAFED_NATIVE=0.
NATIVE_SRC := datafed/hazmat/_djn_native.c
native: $(STAMP) sysdeps
	@so=$$(ls datafed/hazmat/_djn_native.*.so 2>/dev/null | head -n1); \
	if [ -z "$$so" ] || [ $(NATIVE_SRC) -nt "$$so" ] || [ setup.py -nt "$$so" ]; then \
	  echo "==> building the C loop of datafed.hazmat (setup.py build_ext --inplace)"; \
	  $(BIN)/python setup.py -q build_ext --inplace; \
	fi

# System packages the tests use, from Debian where they are absent (idempotent, quiet):
# PostgreSQL 15 and Java 17 (the PostgreSQL and Spark engine tests), chromium (the
# auditor's HTML report test; playwright drives it and never downloads a browser),
# faketime (a collection worker whose clock is skewed, tests/engines/test_collect_pg.py)
# and GMP's header with gcc (the C loop of Paillier encryption, target native).
sysdeps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 \
	  || missing="$$missing postgresql"; \
	jv=$$(java -version 2>&1 | sed -nE '1s/.*version "([0-9]+).*/\1/p'); \
	[ -n "$$jv" ] && [ "$$jv" -ge 17 ] || missing="$$missing openjdk-17-jre-headless"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v faketime >/dev/null 2>&1 || missing="$$missing faketime"; \
	command -v gcc >/dev/null 2>&1 || missing="$$missing gcc"; \
	echo '#include <gmp.h>' | gcc -E -x c - >/dev/null 2>&1 || missing="$$missing libgmp-dev"; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "==> installing$$missing (apt-get)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    $$SUDO apt-get update -qq >/dev/null && $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "==> missing:$$missing (install them for the engine and browser tests)"; \
	  fi; \
	fi

demo: setup
	$(BIN)/python examples/demo.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: setup
	$(BIN)/mypy

protocheck: setup
	$(BIN)/python protos/generate.py --check

unit: setup
	$(BIN)/python -m pytest -q tests

# Every benchmark once at its smallest size, one round, no figure asserted
# (benchmarks/sizes.py): a benchmark that errors or writes no row fails make test.
benchsmoke: setup
	DATAFED_BENCH_SMOKE=1 $(BIN)/python -m pytest -q benchmarks --benchmark-columns=mean

test: setup lint types protocheck unit benchsmoke

bench: setup
	$(BIN)/python -m pytest -q benchmarks $(if $(K),-k "$(K)") --benchmark-columns=mean,ops,rounds

# Long fuzzing (tests/fuzz): FUZZ_EXAMPLES per target, fresh seeds each run; a failure is
# kept in .hypothesis/ and replays first next time. make test runs the same targets bounded.
FUZZ_EXAMPLES ?= 5000
fuzz: setup
	DATAFED_FUZZ=long DATAFED_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q tests/fuzz $(if $(K),-k "$(K)")

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .benchmarks bench-results.json bench-smoke.json
	rm -f datafed/hazmat/_djn_native.*.so
