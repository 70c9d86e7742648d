# pkictl — two entry points for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PKICTL_HOME ?= ca
ORG       ?= Example CPO
COUNTRY   ?= DE
CSMS_HOST ?= localhost
OCPP_PORT ?=
HTTP_PORT ?=

.PHONY: run test lint typecheck imports unit clean

$(VENV)/.stamp-run: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.stamp-dev: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.stamp-run

## run: install, initialize the embedded CA under $(PKICTL_HOME) if absent, show it,
## then run the CSMS (`pkictl serve`) until Ctrl-C; OCPP_PORT= and HTTP_PORT= choose
## its ports (else pkictl.toml's [serve], else 8443 and 8080).
run: $(VENV)/.stamp-run
	@test -f $(PKICTL_HOME)/pkictl.toml || $(BIN)/pkictl --home $(PKICTL_HOME) init \
		--org "$(ORG)" --country $(COUNTRY) --csms-host $(CSMS_HOST)
	$(BIN)/pkictl --home $(PKICTL_HOME) ca list
	$(BIN)/pkictl --home $(PKICTL_HOME) serve $(if $(OCPP_PORT),--ocpp-port $(OCPP_PORT)) $(if $(HTTP_PORT),--http-port $(HTTP_PORT))

## test: lint, type-check, layering contracts, then the test suite.
test: lint typecheck imports unit

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.stamp-dev
	$(BIN)/mypy

imports: $(VENV)/.stamp-dev
	$(BIN)/lint-imports

unit: $(VENV)/.stamp-dev
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
