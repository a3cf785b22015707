# The two commands of the README, and their parts.
.PHONY: demo test setup stack lint typecheck unit integration fuzz clean

demo: setup
	.venv/bin/roomstream stack up
	.venv/bin/roomstream topics apply
	.venv/bin/roomstream db migrate
	.venv/bin/roomstream run

test: setup lint typecheck
	.venv/bin/pytest -p no:cacheprovider

setup:
	deploy/setup.sh

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

typecheck:
	.venv/bin/mypy

unit: setup
	.venv/bin/pytest tests/unit

integration: setup
	.venv/bin/pytest tests/integration

# Random rooms through Roomstream and Synapse's receive path:
#   make fuzz ROOMS=100000 [SEED=0] [MAX_EVENTS=24]
ROOMS ?= 10000
SEED ?= 0
MAX_EVENTS ?= 24
fuzz: setup
	.venv/bin/python -m tests.oracle.fuzz --rooms $(ROOMS) --first-seed $(SEED) --max-events $(MAX_EVENTS)

clean:
	-.venv/bin/roomstream stack down
	rm -rf .stack
