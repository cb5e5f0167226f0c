# Two commands do all the set-up on a fresh machine:
#   make demo   - venv, install, trace fit() vs a tape loop into ./gradtrace.db, print the diagnosis
#   make test   - venv, install (incl. Debian's chromium), run every test
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench chromium postgres maps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[tf,server,http,test,bench]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m gradtrace.demo

# Browser tests drive Debian's chromium (a tool's own browser download does not work offline).
# apt may be busy (another checkout installing it at the same time): wait and retry.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  for i in $$(seq 40); do \
	    command -v chromium >/dev/null 2>&1 && break; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium >/dev/null; } && break; \
	    echo "apt is busy: retrying in 15 s"; sleep 15; \
	  done; command -v chromium >/dev/null || { echo "chromium did not install: see apt's message above"; exit 1; }; }

# The PostgreSQL tests use the local server at 127.0.0.1:5432; start it if it stopped.
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || { \
	  command -v pg_ctlcluster >/dev/null 2>&1 && \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -n1) main start || true; }

# The suite runs in one process, and XLA never unmaps the code it compiles: at the kernel's default
# vm.max_map_count (65530) the last tests meet the tracer's "few memory mappings left" fallback
# (statistics no longer XLA-compiled, with a run warning). Raise the limit where this machine allows.
maps:
	@test "$$(cat /proc/sys/vm/max_map_count 2>/dev/null || echo 262144)" -ge 262144 || \
	  { echo 262144 > /proc/sys/vm/max_map_count; } 2>/dev/null || \
	  echo "vm.max_map_count is $$(cat /proc/sys/vm/max_map_count) and cannot be raised here: tests late in the run may see the tracer's mapping warning"

# Two pytest-xdist workers (the suite's training is mostly single-threaded Python and graph
# building): each module's tests stay on one worker, the case pairs spread one by one
# (tests/conftest.py, pytest_xdist_make_scheduler). TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 2

test: $(STAMP) chromium postgres maps
	$(VENV)/bin/ruff check tracer server migrations tests bench
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --durations=15 $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check tracer server migrations tests bench

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build dist *.egg-info gradtrace.db test-output
