# Two entry points for a fresh machine: `make demo` (the main job on the embedded default) and `make test`.
# Each creates the virtual environment when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

RUN := outputs/synthetic/N20-seed0

demo: $(STAMP)
	$(BIN)/one-shui fit --config configs/pretrain/synthetic.yaml
	$(BIN)/one-shui fit --config configs/retrain/synthetic.yaml
	$(BIN)/one-shui fit --config configs/methods/meta_unlearn_synthetic.yaml
	$(BIN)/one-shui test --config configs/retrain/synthetic.yaml --ckpt_path $(RUN)/retrain/checkpoints/best.ckpt
	$(BIN)/one-shui test --config configs/methods/no_unlearning_synthetic.yaml
	$(BIN)/one-shui test --config configs/methods/meta_unlearn_synthetic.yaml \
		--ckpt_path $(RUN)/meta_unlearn/checkpoints/last.ckpt

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) data outputs .pytest_cache
