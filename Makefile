# vnet: `make demo` runs the main job, `make test` runs the checks.
# Both install what they need (system packages, a .venv) first, idempotently.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SYS_STAMP := $(VENV)/.system-stamp

.PHONY: all setup demo test lint typecheck pytest sanitize fuzz fuzz-short bench bench-overlay stress clean

all: test

# Bytecode as an installed package has it (pip compiles a wheel's modules; an editable
# install does not): fifty overlay agents starting at once would each compile vnet.
setup: $(STAMP)
	@$(BIN)/python -m compileall -q src >/dev/null

$(SYS_STAMP): scripts/setup-system.sh
	bash scripts/setup-system.sh
	$(PYTHON) -m venv $(VENV)
	touch $@

$(STAMP): $(SYS_STAMP) pyproject.toml setup.py src/vnet/_datapath.c
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/vnet demo

lint: setup
	$(BIN)/ruff check src tests bench scripts fuzz

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest -q

test: lint typecheck pytest sanitize fuzz-short

# Coverage-guided fuzzing (atheris) of every target in fuzz/ - the native data path, the
# WireGuard receive path and messages, packet codecs and the switch, every config and
# UAPI parser - each from its committed corpus; bounded by FUZZ_RUNS executions each
# (about 15 minutes at the default). `make test` runs a short pass.
FUZZ_RUNS ?= 1000000
fuzz: setup
	@mkdir -p build
	@for target in fuzz/*.py; do \
		name=$$(basename $$target .py); mkdir -p fuzz/corpus/$$name; \
		echo "fuzz: $$name, $(FUZZ_RUNS) runs"; \
		if ! $(BIN)/python $$target -runs=$(FUZZ_RUNS) fuzz/corpus/$$name \
				> build/fuzz-$$name.log 2>&1; then \
			tail -40 build/fuzz-$$name.log; exit 1; \
		fi; \
		grep -E "^Done" build/fuzz-$$name.log; \
	done

fuzz-short:
	$(MAKE) fuzz FUZZ_RUNS=50000

# The native module built with ASan and UBSan (any report aborts), in a copy of the
# package, and the tests that drive it: the cipher against its reference, the WireGuard
# cores and two daemons on loopback.
SANITIZE := build/sanitize
sanitize: setup
	rm -rf $(SANITIZE) && mkdir -p $(SANITIZE)
	cp -r src/vnet $(SANITIZE)/vnet && rm -f $(SANITIZE)/vnet/*.so
	VNET_SANITIZE=1 $(BIN)/python setup.py -q build_ext --build-lib $(SANITIZE) \
		--build-temp $(SANITIZE)/tmp
	PYTHONPATH=$(SANITIZE) PYTHONMALLOC=malloc ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 \
		LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
		$(BIN)/pytest -q -p no:cacheprovider --capture=sys tests/sanitized.py tests/wireguard tests/packet \
		tests/runtime/test_wg_loop.py

# Tunnels side by side in one run (about 10 minutes); writes bench/RESULTS.md.
bench: setup
	$(BIN)/python bench/run.py

# vnet overlay: 50 hosts over a 3-member etcd cluster, then each backend's throughput
# (about 5 minutes); writes its section of bench/RESULTS.md.
bench-overlay: setup
	$(BIN)/python bench/overlay.py

# vnet-wg and vnet switch under floods and faults (about 10 minutes); writes the table in
# docs/reliability.md. SOAK=600 for the full ten-minute soak.
SOAK ?= 240
stress: setup
	$(BIN)/python bench/stress.py --soak $(SOAK)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis build src/vnet/*.so
