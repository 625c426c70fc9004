"""make audit: known vulnerabilities in the locked packages (pip-audit), for CI and by hand.

    python -m devtools.audit [requirements file ...]   (default: requirements-dev.txt, which holds all)

Fails (exit 1) when a locked package has a known vulnerability. When the
vulnerability feed cannot be reached (no internet, a registry mirror without
PyPI's JSON API), pip-audit cannot tell either way: that is a loud warning and
exit 0, so that CI without internet still runs, and says what it did not check.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    files = (argv if argv is not None else sys.argv[1:]) or ["requirements-dev.txt"]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "audit.json"
        command = [str(Path(sys.executable).parent / "pip-audit"), "--require-hashes", "--disable-pip",
                   "--progress-spinner", "off", "--format", "json", "--output", str(report)]
        for name in files:
            command += ["-r", name]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if not report.exists() or not report.read_text().strip():
            last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
            return unchecked(f"pip-audit could not reach the vulnerability feed: {last[:300]}")
        dependencies = json.loads(report.read_text())["dependencies"]

    vulnerable = [d for d in dependencies if d.get("vulns")]
    skipped = [d for d in dependencies if "skip_reason" in d]
    for dependency in vulnerable:
        for vuln in dependency["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed version yet"
            print(f"audit: {dependency['name']} {dependency['version']}: {vuln['id']} (fixed in {fixed})")
    if vulnerable:
        print(f"audit: {len(vulnerable)} locked packages have known vulnerabilities: upgrade them in "
              "requirements*.in and run make lock.", file=sys.stderr)
        return 1
    audited = len(dependencies) - len(skipped)
    if skipped:
        names = ", ".join(d["name"] for d in skipped[:8]) + (" ..." if len(skipped) > 8 else "")
        return unchecked(f"{len(skipped)} of {len(dependencies)} packages could not be looked up "
                         f"({names}): {skipped[0]['skip_reason']}", audited)
    print(f"audit: no known vulnerabilities in the {audited} locked packages.")
    return 0


def unchecked(reason: str, audited: int = 0) -> int:
    print(
        "\n"
        "WARNING: the vulnerability audit did not run in full. " + reason + "\n"
        f"WARNING: {audited} packages were checked. Run `make audit` where the internet is reachable\n"
        "WARNING: (pip-audit asks PyPI's JSON API) before trusting this build.\n",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
