# runyard: the two commands are `make run` and `make test`; both work from a fresh clone.
.PHONY: setup torch browser promtool python-client schemathesis slurm-up cutfs build run test lint bench crash-loop power-loop clean-libtorch

CARGO ?= cargo
BIND ?= 127.0.0.1:8080
DATA_DIR ?= ./data

# libtorch 2.13.0 (CPU) from the PyPI wheels into .libtorch/, and the digits data set
# into data/datasets/ (both idempotent).
setup:
	bash scripts/setup-libtorch.sh
	bash scripts/fetch-digits.sh

# PyTorch (CPU use of the 2.13.0 wheel) in target/bench-venv, for the data-parallel
# tests and the benches (idempotent; about 5 GB with its dependencies).
torch: setup
	bash scripts/setup-torch.sh

# Debian's chromium and chromedriver for the dashboard's browser test, with apt-get
# when either is missing (as root; elsewhere it says what to install and goes on).
browser:
	bash scripts/setup-browser.sh

# Prometheus's promtool (from Debian's prometheus package, unpacked into
# target/promtool/) for the metrics test's `promtool check` and `test rules`.
promtool:
	bash scripts/setup-promtool.sh

# The Python client package, `pip install ./python[test]` (with pytest and pandas),
# into target/py-venv, for its tests against a real server and its bench (idempotent).
python-client:
	bash scripts/setup-python-client.sh

# A Slurm cluster on this machine for the Slurm executor's tests: Debian's slurm-wlm
# and munge with apt-get when missing, a localhost configuration, the daemons started
# (as root; elsewhere it says why and goes on); then a second node, vm2, in a network
# namespace of its own, and a partition `two` over both (when it cannot be made, it
# says why and the two-node test is skipped).
slurm-up:
	bash scripts/setup-slurm.sh
	bash scripts/setup-slurm-two-nodes.sh

# What the power-cut test needs to mount scripts/cutfs.py: Debian's libfuse2 (with
# apt-get, as root, when missing) and fusepy in target/cutfs-venv.
cutfs:
	bash scripts/setup-cutfs.sh

# schemathesis in target/st-venv, for the OpenAPI conformance test (idempotent).
schemathesis:
	bash scripts/setup-schemathesis.sh

# Set-up and the release build.
build: setup
	$(CARGO) build --release --locked

# Everything from a fresh clone, then the server on $(BIND) with data in $(DATA_DIR).
run: build
	./target/release/runyard serve --bind $(BIND) --data-dir $(DATA_DIR)

# Formatting and lints, as CI checks them.
lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# Everything from a fresh clone, then the whole test suite. The dashboard's browser
# test fails without chromium here, the Slurm tests without a Slurm cluster, and the
# power-cut test without FUSE, the promtool checks without promtool, the Python
# client's tests without target/py-venv, the OpenAPI conformance test without
# schemathesis; RUNYARD_REQUIRE_BROWSER=0, RUNYARD_REQUIRE_SLURM=0,
# RUNYARD_REQUIRE_POWER=0, RUNYARD_REQUIRE_PROMTOOL=0, RUNYARD_REQUIRE_PYTHON_CLIENT=0
# and RUNYARD_REQUIRE_SCHEMATHESIS=0 let them skip instead.
RUNYARD_REQUIRE_BROWSER ?= 1
RUNYARD_REQUIRE_SLURM ?= 1
RUNYARD_REQUIRE_POWER ?= 1
RUNYARD_REQUIRE_PROMTOOL ?= 1
RUNYARD_REQUIRE_PYTHON_CLIENT ?= 1
RUNYARD_REQUIRE_SCHEMATHESIS ?= 1
test: setup torch browser promtool python-client schemathesis slurm-up cutfs lint
	RUNYARD_REQUIRE_SCHEMATHESIS=$(RUNYARD_REQUIRE_SCHEMATHESIS) RUNYARD_REQUIRE_PYTHON_CLIENT=$(RUNYARD_REQUIRE_PYTHON_CLIENT) RUNYARD_REQUIRE_PROMTOOL=$(RUNYARD_REQUIRE_PROMTOOL) RUNYARD_REQUIRE_BROWSER=$(RUNYARD_REQUIRE_BROWSER) RUNYARD_REQUIRE_SLURM=$(RUNYARD_REQUIRE_SLURM) RUNYARD_REQUIRE_POWER=$(RUNYARD_REQUIRE_POWER) $(CARGO) test --locked --all-targets

# The crash loop alone, longer: N SIGKILL-and-restart cycles of the real server (the
# whole suite runs 25). SEED repeats a failing loop's choices.
N ?= 1000
SEED ?=
crash-loop: setup
	RUNYARD_CRASH_CYCLES=$(N) RUNYARD_CRASH_SEED=$(SEED) $(CARGO) test --locked --test crash_loop -- --exact crash_loop --nocapture

# The power-cut loop alone, longer: N cycles of SIGKILL, a cut of the FUSE filesystem
# the data directory is on (every unsynced write lost) and a restart (the whole suite
# runs 20). Needs root and /dev/fuse (`make cutfs` installs the rest).
power-loop: setup cutfs
	RUNYARD_REQUIRE_POWER=1 RUNYARD_POWER_CYCLES=$(N) RUNYARD_POWER_SEED=$(SEED) $(CARGO) test --locked --test crash_loop -- --exact power_loop --nocapture

# Benchmarks: prints `name: value unit` lines and writes bench-results.json. The
# command bench compares with MLflow, installed (with torch) into target/bench-venv.
bench: setup torch browser python-client slurm-up cutfs
	bash scripts/setup-mlflow.sh
	$(CARGO) bench --locked --bench progress --bench journal --bench training --bench replay --bench sse --bench command --bench slurm --bench listing --bench streams --bench ddp --bench sweep --bench python_client
	mkdir -p target/bench-figures
	RUNYARD_POWER_CYCLES=10 RUNYARD_POWER_FIGURES=$(CURDIR)/target/bench-figures/power.json $(CARGO) test --locked --test crash_loop -- --exact power_loop
	RUNYARD_REQUIRE_BROWSER=1 RUNYARD_DASHBOARD_FIGURES=$(CURDIR)/target/bench-figures/dashboard.json $(CARGO) test --locked --test api -- --exact dashboard::ten_thousand_runs_page_filter_and_sort_as_the_api_and_a_run_page_shows_alone
	bash scripts/bench-pytorch.sh
	python3 scripts/bench-report.py

clean-libtorch:
	rm -rf .libtorch .libtorch-wheels
