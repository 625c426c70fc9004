"""One source of settings, refusing to run wrong, and what the deploy files promise.

Settings come from the environment and the .env file beside manage.py (the
environment wins); .env.example lists every setting the site reads; with DEBUG
off, manage.py and the web process refuse unfit settings with one line; Compose
passes the whole .env; the image has a health check of its own.

A test run reads no .env (chatsite/settings.py) and is spared the refusal
(chatsite/startup.py): both key on PYTEST_VERSION, which pytest sets and the
processes it starts inherit. The tests here that run commands as an operator
would take it away, and name a .env of their own with DJANGO_ENV_FILE.
"""

import ast
import html
import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.test import Client

from conversations import knowledge
from devtools.processes import ROOT, Site, free_port, procfile_command

from .client import SiteClient

GOOD_KEY = secrets.token_urlsafe(50)
# What the settings, the Procfile and the entry points read besides the settings themselves.
NOT_SETTINGS = {"DJANGO_SETTINGS_MODULE", "PYTEST_VERSION"}


def is_environ(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def site_modules() -> list[Path]:
    """What the site runs: chatsite/ and conversations/, without the tests."""
    return [path for package in ("chatsite", "conversations") for path in (ROOT / package).rglob("*.py")
            if "tests" not in path.parts]


def settings_read() -> set[str]:
    """Every variable the site's code reads: os.environ.get("NAME"), os.environ["NAME"],
    os.getenv("NAME") and settings.py's env_*("NAME", ...)."""
    names = set()
    for path in site_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                function = node.func
                reads = (isinstance(function, ast.Name) and function.id.startswith("env_")) or (
                    isinstance(function, ast.Attribute) and (
                        (function.attr == "get" and is_environ(function.value)) or function.attr == "getenv"))
                if reads and isinstance(node.args[0].value, str):
                    names.add(node.args[0].value)
            elif isinstance(node, ast.Subscript) and is_environ(node.value) and isinstance(node.slice, ast.Constant):
                if isinstance(node.slice.value, str):
                    names.add(node.slice.value)
    return names - NOT_SETTINGS


def procfile_reads() -> set[str]:
    """The variables the Procfile's commands take from the shell (${PORT:-8000}, ...)."""
    return set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", (ROOT / "Procfile").read_text()))


def env_example_lists() -> set[str]:
    """The names .env.example lists, set (NAME=...) or commented out with their default (# NAME=...)."""
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def test_env_example_lists_every_setting_the_site_reads():
    read = settings_read() | procfile_reads()
    assert {"DJANGO_SECRET_KEY", "DATABASE_URL", "CHAT_LLM_DEADLINE", "PORT"} <= read  # the scan works
    missing = sorted(read - env_example_lists())
    assert not missing, (
        "read by the site (chatsite/, conversations/) or the Procfile but not listed in .env.example "
        f"(add each, grouped and commented): {', '.join(missing)}")


def test_env_example_lists_nothing_the_site_does_not_read():
    unknown = sorted(env_example_lists() - settings_read() - procfile_reads())
    assert not unknown, f"listed in .env.example but read by nothing: {', '.join(unknown)}"


def test_env_example_reads_the_same_in_python_compose_and_systemd():
    """Plain KEY=value lines: python-dotenv, Compose's env_file and systemd's EnvironmentFile agree."""
    from dotenv import dotenv_values

    path = ROOT / ".env.example"
    plain = dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    assert dotenv_values(path, interpolate=False) == plain
    for name, value in plain.items():
        assert not re.search(r"[\"'$#]|^\s|\s$", value), f"{name}: quote, $, # or outer space in {value!r}"


# --- Running commands as an operator would ------------------------------------------


def operator_env(tmp_path: Path, env_file: str = "", **settings: str) -> dict[str, str]:
    """A shell with none of the site's settings, not a test run, reading `env_file` as its .env."""
    ours = ("DJANGO_", "CHAT_", "DATABASE_", "REDIS_", "OPENAI_", "EMAIL_", "SENTRY_", "PYTEST_")
    env = {key: value for key, value in os.environ.items() if not key.startswith(ours)}
    path = tmp_path / "operator.env"
    path.write_text(env_file)
    return {**env, "DJANGO_ENV_FILE": str(path), **settings}


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


SHOW = ["manage.py", "shell", "-v", "0", "-c",
        "from django.conf import settings; print(settings.CHAT_SHOP_NAME, settings.OPENAI_MODEL, settings.DEBUG)"]


def test_manage_py_reads_the_env_file_and_the_environment_wins(tmp_path):
    env = operator_env(tmp_path, "DJANGO_DEBUG=1\nCHAT_SHOP_NAME=Shop from the file\nOPENAI_MODEL=file-model\n",
                       OPENAI_MODEL="environment-model")
    result = run(SHOW, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Shop from the file environment-model True"


def test_a_production_env_file_makes_a_new_shell_production(tmp_path):
    """The README's old answer was `export` in every new terminal; now .env is enough, and the
    same key is used every time."""
    env = operator_env(tmp_path, f"DJANGO_SECRET_KEY={GOOD_KEY}\nDATABASE_URL=sqlite:///{tmp_path}/db.sqlite3\n")
    result = run(SHOW, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("False")
    assert "development settings" not in result.stderr


def test_a_test_run_reads_no_env_file(settings):
    assert settings.ENV_FILE == ""


GOOD = {"DJANGO_SECRET_KEY": GOOD_KEY, "DJANGO_ALLOWED_HOSTS": "chat.example.com",
        "DATABASE_URL": "postgres://chatsite@127.0.0.1:5432/chatsite"}


@pytest.mark.parametrize("change, names", [
    ({"DJANGO_SECRET_KEY": None}, "DJANGO_SECRET_KEY"),
    ({"DJANGO_SECRET_KEY": ""}, "DJANGO_SECRET_KEY"),
    ({"DJANGO_SECRET_KEY": "too-short-a-key"}, "DJANGO_SECRET_KEY"),
    ({"DJANGO_SECRET_KEY": "x" * 60}, "DJANGO_SECRET_KEY"),  # long, but 1 distinct character
    ({"DJANGO_SECRET_KEY": "compose-on-localhost-only-set-your-own"}, "DJANGO_SECRET_KEY"),  # Compose's old default
    ({"DJANGO_SECRET_KEY": "django-insecure-" + GOOD_KEY}, "DJANGO_SECRET_KEY"),
    ({"DJANGO_ALLOWED_HOSTS": ""}, "DJANGO_ALLOWED_HOSTS"),
    ({"DJANGO_ALLOWED_HOSTS": " , "}, "DJANGO_ALLOWED_HOSTS"),
    ({"DATABASE_URL": None}, "DATABASE_URL"),
])
@pytest.mark.parametrize("where", ["environment", "env file"])
def test_commands_and_the_site_refuse_unfit_settings_with_one_line(tmp_path, change, names, where):
    settings = {key: value for key, value in {**GOOD, "DJANGO_DEBUG": "0", **change}.items() if value is not None}
    if where == "environment":
        env = operator_env(tmp_path, **settings)
    else:
        env = operator_env(tmp_path, "".join(f"{key}={value}\n" for key, value in settings.items()))
    commands = [["manage.py", "chat_stats"]]
    if where == "environment":
        commands += [["manage.py", "check"], ["-c", "import chatsite.asgi"]]
    for command in commands:
        result = run(command, env)
        assert result.returncode != 0, (command, result.stdout)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and names in lines[0], (command, result.stderr)
        assert lines[0].startswith("chatsite: ")


def test_fit_settings_start(tmp_path):
    # Else check --deploy warns (W001, W003).
    env = operator_env(tmp_path, **GOOD, CHAT_EMBED_ORIGINS="https://shop.example",
                       CHAT_SITE_URL="https://chat.example.com")
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
    assert result.returncode == 0, result.stderr + result.stdout


def test_the_web_process_stops_instead_of_restarting_its_workers(tmp_path):
    """gunicorn, run as the Procfile runs it, exits (status 3) with the one line, no traceback."""
    env = operator_env(tmp_path, **{**GOOD, "DATABASE_URL": ""},
                       PORT=str(free_port()), WEB_CONCURRENCY="1",
                       PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    result = subprocess.run(["bash", "-c", "exec " + procfile_command("web").replace("0.0.0.0", "127.0.0.1")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    assert "chatsite: Set DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_manage_py_in_a_bare_shell_is_still_development(tmp_path):
    """A fresh clone's support commands (and `make run`'s migrate) need nothing set."""
    result = run(["manage.py", "diffsettings", "--all"], operator_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "DEBUG = True" in result.stdout


def test_the_served_site_reads_its_env_file(tmp_path):
    """The Procfile's web command, with its hosts only in the file DJANGO_ENV_FILE names."""
    path = tmp_path / "site.env"
    path.write_text("DJANGO_DEBUG=1\nDJANGO_ALLOWED_HOSTS=chat.example.com\n")
    site = Site({"DJANGO_ENV_FILE": str(path), "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
                 "REDIS_URL": ""})
    try:
        api = SiteClient(site)
        _, body, _ = api.request("GET", "/api/history", headers={"Host": "127.0.0.1"})
        assert body["error"]["code"] == "bad_request"  # not a host of the file's
        _, body, _ = api.request("GET", "/api/history", headers={"Host": "chat.example.com"})
        assert body["error"]["code"] != "bad_request"
    finally:
        site.stop()


# --- Compose and the image --------------------------------------------------------------


def compose_services() -> dict:
    """docker-compose.yml as Compose reads it (YAML merge keys resolved; no Docker CLI here)."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def test_compose_passes_the_whole_env_file_and_no_default_key():
    text = "\n".join(line for line in (ROOT / "docker-compose.yml").read_text().splitlines()
                     if not line.lstrip().startswith("#"))
    for name in ("release", "web"):
        service = compose_services()[name]
        env_file = service.get("env_file")
        assert env_file in (".env", [".env"]) or {"path": ".env"} in (env_file or []), (name, env_file)
        environment = service.get("environment") or {}
        # Only what points at Compose's own services (and DEBUG off) may override the file.
        assert set(environment) <= {"DJANGO_DEBUG", "PORT", "DATABASE_URL", "REDIS_URL"}, (name, environment)
    assert "DJANGO_SECRET_KEY" not in text, "the key comes from .env only, with no default"
    assert ":-" not in re.sub(r"\$\{PORT:-\d+\}", "", text), "no ${VAR:-default} for a setting of the site"


def test_the_image_has_a_health_check_that_asks_livez(live_site, tmp_path):
    """The Dockerfile's HEALTHCHECK command, run against the site served the Procfile's way. It asks
    the liveness answer: a container replaced because the database is down brings nothing back."""
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", (ROOT / "Dockerfile").read_text().replace("\\\n", ""),
                      flags=re.MULTILINE)
    assert match, "the Dockerfile has no HEALTHCHECK in exec form"
    command = json.loads(match.group(1))
    assert command[0] == "python" and "/livez" in command[-1]

    env = {**os.environ, "PORT": str(live_site.port), "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1"}
    healthy = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30)
    assert healthy.returncode == 0, healthy.stderr
    env["PORT"] = str(free_port())  # nothing listens there
    unhealthy = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30)
    assert unhealthy.returncode != 0


# --- The page without JavaScript --------------------------------------------------------


@pytest.mark.django_db
def test_the_page_says_it_needs_javascript_and_how_else_to_reach_the_shop():
    page = Client().get("/").content.decode()
    noscript = re.search(r"<noscript>(.*?)</noscript>", page, flags=re.DOTALL)
    assert noscript, "no <noscript> on the page"
    text = noscript.group(1)
    assert "JavaScript" in text
    first_contact_line = knowledge.contact_details().splitlines()[0]
    assert first_contact_line and html.escape(first_contact_line) in text


# --- The documentation ---------------------------------------------------------------------


def test_the_readme_is_what_a_newcomer_needs_and_every_link_resolves():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 100, "the README is for a newcomer: the rest goes to docs/"
    for command in ("    make run ", "    make test\n",
                    "DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/0 make test"):
        assert command in readme, command
    for page in ["configuration", "deploy", "operations", "staff", "api"]:
        assert f"(docs/{page}.md)" in readme, page

    for document in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", document.read_text()):
            if not re.match(r"[a-z]+:", target):
                assert (document.parent / target).exists(), f"{document.relative_to(ROOT)} links to {target}"
