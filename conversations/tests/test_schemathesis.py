"""schemathesis, driven by docs/openapi.yaml, against the site as deployed (gunicorn + uvicorn).

It generates valid and invalid requests for every documented operation and
checks that none is a server error and that every response has a documented
status, content type, headers and body. The CLI runs in a subprocess, as a
developer would run it by hand against a running site:

    schemathesis run docs/openapi.yaml --url http://127.0.0.1:8000 --checks all
"""

import subprocess
import sys
from pathlib import Path

from devtools.processes import ROOT

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
]


def test_the_served_api_holds_to_its_document(live_site, tmp_path):
    schemathesis = Path(sys.executable).parent / "schemathesis"
    command = [
        str(schemathesis), "run", str(ROOT / "docs" / "openapi.yaml"),
        "--url", live_site.url,
        "--checks", ",".join(CHECKS),
        # stateful: follows the documented links (chat -> its history -> forget it).
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", "25",
        "--seed", "5",  # the same requests on every run, so a failure reproduces
        "--workers", "1",
        "--request-timeout", "10",
        "--generation-database", "none",
        "--no-color",
    ]
    # cwd: schemathesis and hypothesis may leave files behind; keep them out of the repository.
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, f"schemathesis found problems:\n{result.stdout}\n{result.stderr}"
