# The two commands of the README, and their parts.
.PHONY: demo test setup stack lint typecheck unit integration clean

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

clean:
	-.venv/bin/roomstream stack down
	rm -rf .stack
