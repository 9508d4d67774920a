# ppgen: `make demo` shows it working on MNIST, `make test` runs the test suite.
# Both create .venv and install ppgen into it (torch pinned to the CPU build in constraints.txt).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := runs/demo

.PHONY: install demo test test-slow benchmarks clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ppgen data fetch mnist
	rm -rf $(DEMO)
	$(BIN)/ppgen fit models/vae.yaml --epochs 10 --out $(DEMO)/vae
	$(BIN)/ppgen evaluate $(DEMO)/vae
	$(BIN)/ppgen diagnose $(DEMO)/vae > $(DEMO)/vae/diagnose.txt
	$(BIN)/ppgen fit models/vae.yaml --set latent.dim=2 --epochs 10 --out $(DEMO)/vae2d
	@echo
	@echo "Figures of the 50-d VAE:  $(DEMO)/vae/figures/ (samples, reconstructions, traversals, training curves, posterior)"
	@echo "Its test NLL (nats):      $(DEMO)/vae/evaluation.json; ArviZ data: $(DEMO)/vae/idata.nc"
	@echo "The 2-d latent manifold:  $(DEMO)/vae2d/figures/manifold.png and latent.png"

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/vae.py

clean:
	rm -rf $(VENV) runs *.egg-info
