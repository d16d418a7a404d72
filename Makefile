# kdprune's front door. `make run` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kdprune-installed
ARGS ?=
comma := ,
PYTEST_ARGS ?=
# Processes (ranks) of one run: NPROC=2 make run starts it with torchrun (`kdprune.launch`: gloo
# on CPU, NCCL on CUDA, one line when a rank fails); 1 runs it in this process.
NPROC ?= 1
KDPRUNE_RUN := $(if $(filter-out 1,$(NPROC)),$(PY) -m kdprune.launch --nproc $(NPROC),$(PY) -m kdprune)
# pytest-xdist workers for `make test` (auto: one per CPU core); modules stay whole on one worker
# (--dist loadscope), so a module's shared fixture runs once.
TEST_WORKERS ?= auto

# The script interface: these variables, from the environment or the make command line, become
# overrides of `make run` and the sweep targets (ARGS come after them and win).
#   PRUNE_RATIO=0.7 PRUNE_METHOD=taylor make run
#   STUDENT_CKPT=student.pt TEACHER_CKPT=teacher.pt FINETUNE_EPOCHS=2 make run
# STUDENT_CKPT prunes that trained state_dict once and fine-tunes it (prune_then_distill), whose
# epochs are all fine-tuning; TEACHER_CKPT is used instead of training a teacher.
SCRIPT_OVERRIDES := \
  $(if $(PRUNE_METHOD),prune_method=$(PRUNE_METHOD)) \
  $(if $(PRUNE_RATIO),prune_method.ratio=$(PRUNE_RATIO)) \
  $(if $(STUDENT_CKPT),schedule=prune_then_distill student_init=checkpoint 'student_checkpoint=$(STUDENT_CKPT)') \
  $(if $(TEACHER_CKPT),'teacher.checkpoint=$(TEACHER_CKPT)') \
  $(if $(FINETUNE_EPOCHS),budget.finetune_epochs=$(FINETUNE_EPOCHS)) \
  $(if $(and $(STUDENT_CKPT),$(FINETUNE_EPOCHS)),budget.student_epochs=$(FINETUNE_EPOCHS))

.PHONY: help setup qemu data run gpu-check test test-all lint format clean sweep-orders sweep-optuna sweep-pareto sweep-worker require-storage dashboard bench-sweeps headline report report-optuna report-pareto bench sweep-movement sweep-latency-allocation sensitivity
help:
	@echo "make run        default experiment (Fashion-MNIST, cached teacher, 50% L1 channels, Distill-then-Prune, Hinton KD)"
	@echo "NPROC=2 make run  the same experiment on 2 processes (torchrun, DistributedDataParallel)"
	@echo "make gpu-check  the CUDA path on a GPU (skips without one): outputs/gpu_check/<date>/gpu_check.json"
	@echo "make test       the fast test suite (pytest -m 'not slow')"
	@echo "make test-all   every test, slow ones too"
	@echo "make data       install / prepare Fashion-MNIST"
	@echo "make sweep-orders   the three orders x prune ratios x KD on/off (accuracy-vs-sparsity curves)"
	@echo "make sweep-optuna   Optuna TPE search (resumable; n_trials is the study's total)"
	@echo "make sweep-pareto   NSGA-II: validation accuracy vs MACs"
	@echo "make headline   the fair verdict: 3 orders x KD on/off x 2x/4x MACs x 2 teachers, seeds until decided"
	@echo "make sweep-movement  movement vs magnitude pruning (weights, channels) at 50% and 90%, joint, 3 seeds"
	@echo "make sweep-latency-allocation  latency-aware vs uniform allocation at 2x measured latency, 4 seeds"
	@echo "make sensitivity     kdprune sensitivity of the teacher, then its ratio file vs the uniform cut, 3 seeds"
	@echo "make sweep-worker   one worker of a study shared through KDPRUNE_STORAGE (start N of them; SWEEP=optuna|pareto)"
	@echo "make dashboard      optuna-dashboard for the study on 127.0.0.1:DASHBOARD_PORT (8080)"
	@echo "make report     report of the newest orders sweep (or REPORT_SRC=<folder>)"
	@echo "make lint       ruff check + format check + mypy (kdprune/)"
	@echo "make clean      remove outputs (runs, cache) and build litter"
	@echo "Pass Hydra overrides with ARGS, e.g. make run ARGS='model=lenet5 prune_method=taylor'"

setup: $(STAMP) qemu

$(STAMP): pyproject.toml setup.py
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

# qemu-user lets the tests run ONNX Runtime's INT8 kernels of a CPU without VNNI on any x86-64
# machine (`qemu-x86_64 -cpu Haswell`, tests/helpers/emulated_cpu.py); installed with apt-get as root, like
# dataset-fashion-mnist below. Without it those tests are skipped, saying why.
qemu:
	@if [ "$$(uname -m)" = x86_64 ] && ! command -v qemu-x86_64 >/dev/null; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && apt-get install -y -qq qemu-user >/dev/null) \
	      || echo "apt-get could not install qemu-user; the tests that emulate an AVX2 CPU will be skipped"; \
	  else \
	    echo "qemu-x86_64 is missing (apt-get install qemu-user, as root); the tests that emulate an AVX2 CPU will be skipped"; \
	  fi; \
	fi

# Fashion-MNIST ships in Debian's dataset-fashion-mnist package; without apt (or root), the code
# falls back to torchvision's download.
data: setup
	@if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
	      || echo "apt-get could not install dataset-fashion-mnist; trying torchvision's download"; \
	  elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then \
	    (sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
	      || echo "apt-get could not install dataset-fashion-mnist; trying torchvision's download"; \
	  fi; \
	fi
	$(PY) -m kdprune.data fashion_mnist

run: data
	$(KDPRUNE_RUN) $(strip $(SCRIPT_OVERRIDES) $(ARGS))

# The CUDA path on a lent GPU, under 5 minutes: probes (bf16 autocast, channels_last, GPU-resident
# data), the default experiment on CUDA, `make bench ARGS='--only cuda'` and, with two GPUs, a
# 2-rank NCCL run; everything it finds goes to outputs/gpu_check/<date>/gpu_check.json. Without
# CUDA it writes that it skipped and exits 0.
gpu-check: setup
	$(PY) -m benchmarks.gpu_check $(ARGS)

test: setup
	$(PY) -m pytest -m "not slow" -n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

test-all: setup data
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

OPTUNA_DB := outputs/sweeps/optuna/study.db
PARETO_DB := outputs/sweeps/pareto/study.db
# A study's storage: $KDPRUNE_STORAGE when set (the sweeps read it too), else the sweep's SQLite file.
OPTUNA_STORAGE := $(or $(KDPRUNE_STORAGE),sqlite:///$(OPTUNA_DB))
PARETO_STORAGE := $(or $(KDPRUNE_STORAGE),sqlite:///$(PARETO_DB))
SWEEP ?= optuna
THREADS ?=
DASHBOARD_PORT ?= 8080
DASHBOARD_STORAGE := $(if $(filter pareto,$(SWEEP)),$(PARETO_STORAGE),$(OPTUNA_STORAGE))
REPORT_SRC ?= $(shell ls -dt outputs/sweeps/orders/*/ 2>/dev/null | head -n 1)

sweep-orders: data
	$(PY) -m kdprune -m +sweep=orders $(strip $(SCRIPT_OVERRIDES) $(ARGS))

sweep-optuna: data
	$(PY) -m kdprune -m +sweep=optuna $(strip $(SCRIPT_OVERRIDES) $(ARGS))
	$(PY) -m kdprune report --storage $(OPTUNA_STORAGE) --study kdprune-optuna

# The headline experiment (sweeps/headline.yaml) with the sequential design: its arms (orders x
# KD x MACs cut x teacher: the student's own architecture and a larger one, cnn5) get seeds in
# looks (HEADLINE_START, then HEADLINE_BATCH more, up to HEADLINE_CAP) until every verdict is
# decided; kd=none runs do not use the teacher and run once for both teachers. The defaults took
# 70 minutes on a 2-core AVX-512 CPU from an empty teacher cache (README "The headline verdict").
# HEADLINE_TEACHER= (empty) skips the larger teacher.
# Re-running with the same HEADLINE_DIR resumes.
HEADLINE_DIR ?= outputs/sweeps/headline/$(shell date +%Y-%m-%d_%H-%M-%S)
HEADLINE_TEACHER ?= cnn5
HEADLINE_START ?= 4
HEADLINE_BATCH ?= 2
HEADLINE_CAP ?= 6

headline: data
	$(PY) -m kdprune verdict --until-decided +sweep=headline \
	  teacher=same$(if $(HEADLINE_TEACHER),$(comma)$(HEADLINE_TEACHER)) $(strip $(SCRIPT_OVERRIDES) $(ARGS)) \
	  --start $(HEADLINE_START) --batch $(HEADLINE_BATCH) --cap $(HEADLINE_CAP) --dir $(HEADLINE_DIR)

# Movement vs magnitude (sweeps/movement.yaml); the report pairs the methods at each target.
MOVEMENT_DIR := outputs/sweeps/movement/$(shell date +%Y-%m-%d_%H-%M-%S)

sweep-movement: data
	$(PY) -m kdprune -m +sweep=movement hydra.sweep.dir=$(MOVEMENT_DIR) $(strip $(SCRIPT_OVERRIDES) $(ARGS))
	$(PY) -m kdprune report $(MOVEMENT_DIR) --compare prune_method

# Latency-aware allocation vs the uniform cut at one measured latency (sweeps/latency_allocation.yaml):
# 8 runs one at a time, about 17 minutes on a 2-core AVX-512 machine; the report pairs them by seed.
LATENCY_ALLOCATION_DIR := outputs/sweeps/latency_allocation/$(shell date +%Y-%m-%d_%H-%M-%S)
sweep-latency-allocation: data
	$(PY) -m kdprune -m +sweep=latency_allocation hydra.sweep.dir=$(LATENCY_ALLOCATION_DIR) $(strip $(SCRIPT_OVERRIDES) $(ARGS))
	$(PY) -m kdprune report $(LATENCY_ALLOCATION_DIR) --compare prune_method

# Sensitivity analysis of the sweep's teacher, then its ratio file against the uniform cut of the
# same MACs (sweeps/sensitivity.yaml), in one report.
SENSITIVITY_DIR := outputs/sweeps/sensitivity/$(shell date +%Y-%m-%d_%H-%M-%S)

sensitivity: data
	$(PY) -m kdprune sensitivity +sweep=sensitivity --out $(SENSITIVITY_DIR) $(ARGS)
	$(PY) -m kdprune -m +sweep=sensitivity 'prune_method.layer_ratios=null,$(CURDIR)/$(SENSITIVITY_DIR)/layer_ratios.yaml' hydra.sweep.dir=$(SENSITIVITY_DIR)/runs $(ARGS)
	$(PY) -m kdprune report $(SENSITIVITY_DIR)/runs --compare prune_method

sweep-pareto: data
	$(PY) -m kdprune -m +sweep=pareto $(strip $(SCRIPT_OVERRIDES) $(ARGS))
	$(PY) -m kdprune report --storage $(PARETO_STORAGE) --study kdprune-pareto

# One worker of a shared study: start it N times (one machine, several, a SLURM array); together
# they run the study's n_trials. THREADS=1 when several workers share a machine's cores.
sweep-worker: require-storage data
	$(PY) -m kdprune -m +sweep=$(SWEEP) $(strip $(if $(THREADS),trainer.threads=$(THREADS)) $(SCRIPT_OVERRIDES) $(ARGS))

require-storage:
	@test -n "$$KDPRUNE_STORAGE" || { echo "set KDPRUNE_STORAGE to the study's URL, e.g. postgresql://user@host/kdprune or journal:///shared/study.log"; exit 2; }

dashboard: setup
	@$(PY) -c "import optuna_dashboard" 2>/dev/null || $(PY) -m pip install --quiet --disable-pip-version-check -e '.[dashboard]'
	$(PY) -m kdprune dashboard --storage $(DASHBOARD_STORAGE) --port $(DASHBOARD_PORT)

report: setup
	@test -n "$(REPORT_SRC)" || { echo "no sweep found under outputs/sweeps/orders; run make sweep-orders or set REPORT_SRC"; exit 2; }
	$(PY) -m kdprune report $(REPORT_SRC)

report-optuna: setup
	$(PY) -m kdprune report --storage $(OPTUNA_STORAGE) --study kdprune-optuna

report-pareto: setup
	$(PY) -m kdprune report --storage $(PARETO_STORAGE) --study kdprune-pareto

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf outputs multirun wandb .pytest_cache .ruff_cache .mypy_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

bench: data
	$(PY) -m benchmarks $(ARGS)

# Two workers vs one on a 12-trial study, the median pruner vs none on a 16-trial one (about an
# hour on a 2-core CPU): SHARED_STUDY.md and benchmarks/shared_study.json.
bench-sweeps: data
	$(PY) -m benchmarks.shared_study $(ARGS)
