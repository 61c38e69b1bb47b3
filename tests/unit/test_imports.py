"""`hybridflow --version` and `--help` stay fast: they import no database, HTTP or model client (no timing)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = {"sqlalchemy", "aiohttp", "httpx", "ollama"}
PROBE = """
import json, runpy, sys
args, heavy = json.loads(sys.argv[1]), set(json.loads(sys.argv[2]))
sys.argv = ["hybridflow", *args]
try:
    runpy.run_module("hybridflow", run_name="__main__")
except SystemExit:
    pass
loaded = sorted({name.split(".")[0] for name in sys.modules} & heavy)
service = sorted(name for name in sys.modules if name.startswith("hybridflow.service"))
print(json.dumps({"heavy": loaded, "service": service}), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["tenants", "--help"], ["sessions", "list", "--help"],
                                  ["serve", "--help"], ["replay", "--help"]], ids=" ".join)
def test_version_and_help_import_no_heavy_module(args):
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args), json.dumps(sorted(HEAVY))],
                            capture_output=True, text=True, timeout=60, check=True)
    imported = json.loads(result.stderr.strip().splitlines()[-1])
    assert imported == {"heavy": [], "service": []}, imported
    assert result.stdout.strip()


def test_the_cli_app_is_still_importable_for_tests():
    from hybridflow.cli import app, main

    assert app.info.name == "hybridflow" and callable(main)
