"""Commands run by a person at a terminal ask before doing what they would otherwise demand --yes for."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
from pathlib import Path

from hybridflow.crypto import generate_key
from tests.support.serve import HYBRIDFLOW, clean_env

PROMPT = "Você atende a Padaria Boa. Responda curto."


def run_on_a_terminal(args: list[str], answer: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """`hybridflow ARGS` with a pseudo-terminal as stdin and stdout, typing ``answer`` when it asks."""
    leader, follower = pty.openpty()
    process = subprocess.Popen([*HYBRIDFLOW, *args], stdin=follower, stdout=follower, stderr=follower, env=env,
                               cwd=cwd)
    os.close(follower)
    output = b""
    answered = False
    while True:
        ready, _, _ = select.select([leader], [], [], 30)
        if not ready:
            process.kill()
            raise AssertionError(f"no output for 30 s: {output!r}")
        try:
            chunk = os.read(leader, 1024)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        output += chunk
        if not answered and b"[y/N]" in output:
            os.write(leader, answer.encode() + b"\n")
            answered = True
    os.close(leader)
    return process.wait(timeout=30), re.sub(r"\x1b\[[0-9;]*m", "", output.decode(errors="replace"))


def test_remove_asks_on_a_terminal_instead_of_demanding_yes(tmp_path):
    env = clean_env(database_url=f"sqlite:///{tmp_path / 'hf.db'}", secret_key=generate_key())
    for name in ("padaria", "acougue"):
        subprocess.run([*HYBRIDFLOW, "tenants", "add", name, "--prompt", PROMPT], env=env, cwd=tmp_path, check=True,
                       capture_output=True)
    code, output = run_on_a_terminal(["tenants", "remove", "acougue"], "n", env, tmp_path)
    assert code == 2 and "Remove tenant 'acougue'?" in output and "needs --yes" in output
    code, output = run_on_a_terminal(["tenants", "remove", "padaria"], "y", env, tmp_path)
    assert code == 0 and "tenant padaria removed" in output
    listed = subprocess.run([*HYBRIDFLOW, "tenants", "list", "--json"], env=env, cwd=tmp_path, capture_output=True,
                            text=True, check=True)
    assert [t["instance"] for t in json.loads(listed.stdout)["tenants"]] == ["acougue"]
