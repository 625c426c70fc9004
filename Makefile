# The two commands a newcomer needs:
#   make run    set up and run the site on its embedded defaults (SQLite, in-process cache, offline responder)
#   make test   set up and run the tests (DATABASE_URL / REDIS_URL select PostgreSQL and Redis; see README)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: run test setup setup-dev chromium wrk gettext translations messages bench faults faq-eval fake-llm lint audit lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The locked files (requirements*.txt, made by `make lock`) pin every package,
# indirect ones too, with the hashes of their files: pip refuses anything else.
setup: $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r requirements.txt

setup-dev: $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.txt

# The translations (locale/*/LC_MESSAGES/*.po, docs/i18n.md) compiled to the .mo files Django
# reads: build output, not in git. msgfmt is GNU gettext's; `make` installs Debian's package
# when it runs as root and msgfmt is missing, as it does Chromium.
gettext:
	@if ! command -v msgfmt >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gettext >/dev/null; \
		else \
			echo "Install GNU gettext for the translations: sudo apt-get install gettext"; \
		fi; \
	fi

# Without msgfmt the site still runs, in English only (and test_i18n.py fails, saying why).
translations: setup gettext
	@if command -v msgfmt >/dev/null; then \
		DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(BIN)/python manage.py compilemessages --ignore=.venv --verbosity 0; \
	else \
		echo "No msgfmt: the translations are not compiled; the site speaks English only."; \
	fi

# After changing a text the page, the API or a notice shows: the .po files updated from the code
# (new texts come in untranslated; translate them, and test_i18n.py passes again).
MESSAGES_ARGS = --no-obsolete --no-location --ignore=.venv --ignore=staticfiles --ignore=conversations/tests \
	--ignore=bench --ignore=devtools -l de -l fr -l es -l ar
messages: setup gettext
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(BIN)/python manage.py makemessages $(MESSAGES_ARGS)
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(BIN)/python manage.py makemessages -d djangojs $(MESSAGES_ARGS)

run: setup translations
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(BIN)/python manage.py migrate --noinput
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(BIN)/python manage.py collectstatic --noinput --verbosity 0
	exec env DJANGO_DEBUG=$${DJANGO_DEBUG:-1} PATH="$(CURDIR)/$(BIN):$$PATH" \
		$(BIN)/gunicorn chatsite.asgi:application --worker-class chatsite.worker.Worker \
		--bind 127.0.0.1:$(PORT) --workers $${WEB_CONCURRENCY:-1} --forwarded-allow-ips= --no-control-socket

# Debian's Chromium, for the browser tests (Playwright drives it; it never downloads a browser).
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "Install Chromium for the browser tests: sudo apt-get install chromium"; \
		fi; \
	fi

test: setup-dev chromium translations
	DJANGO_SECRET_KEY=$${DJANGO_SECRET_KEY:-test-only-secret-key} $(BIN)/python -m pytest $(PYTEST_ARGS)

# wrk drives the JSON figures (bench/load.py): Debian's, installed as Chromium is.
wrk:
	@if ! command -v wrk >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
		else \
			echo "Install wrk for the benchmarks: sudo apt-get install wrk"; exit 1; \
		fi; \
	fi

bench: setup-dev wrk
	$(BIN)/python -m bench $(BENCH_ARGS)

faq-eval: setup
	$(BIN)/python -m conversations.tests.faq_questions

# The faults a turn must survive, injected into the deployed site (docs/faults.md).
faults: setup-dev
	$(BIN)/python -m bench.faults

# The stand-in LLM on a fixed port, to try streaming and failures by hand: it
# prints how to point `make run` at it and how to make it fail.
FAKE_LLM_PORT ?= 8001
fake-llm: setup
	$(BIN)/python -m devtools.fake_llm --port $(FAKE_LLM_PORT)

# Ruff and mypy (with Django's stubs), as configured in pyproject.toml; CI and
# pre-commit run the same. mypy's Django plugin loads the settings, which want a key.
lint: setup-dev
	$(BIN)/ruff check .
	DJANGO_SECRET_KEY=lint-only $(BIN)/mypy

# Known vulnerabilities in the locked packages (pip-audit; warns and passes
# when the vulnerability feed cannot be reached: see devtools/audit.py).
audit: setup-dev
	$(BIN)/python -m devtools.audit

# requirements*.txt from requirements*.in: every package, indirect ones too,
# pinned with the hashes of its files. Run it after editing a .in file.
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-find-links --no-emit-index-url
lock: setup-dev
	$(PIP_COMPILE) --output-file requirements.txt requirements.in
	$(PIP_COMPILE) --output-file requirements-dev.txt requirements-dev.in
