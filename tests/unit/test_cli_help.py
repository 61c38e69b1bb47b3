"""The command line's help: every command and option explained, `--version`; no database, no process."""

from __future__ import annotations

import pytest

from tests.support.cli import command_tree, invoke, ok

COMMANDS = ("serve", "tenants", "sessions", "sweep", "replay", "keys")


# --- help ---------------------------------------------------------------------------------------------------------


ALL_COMMANDS = command_tree()


def test_help_lists_every_command():
    result = ok(invoke("--help"))
    for name in COMMANDS:
        assert f" {name} " in result.stdout, name


@pytest.mark.parametrize(("path", "command"), ALL_COMMANDS, ids=[" ".join(p) or "hybridflow" for p, _ in ALL_COMMANDS])
def test_every_command_has_help_text(path, command):
    assert (command.help or "").strip(), f"`hybridflow {' '.join(path)}` has no help text"
    result = ok(invoke(*path, "--help"))
    assert command.help.strip().split("\n")[0][:40] in " ".join(result.stdout.split())


@pytest.mark.parametrize(("path", "command"), ALL_COMMANDS, ids=[" ".join(p) or "hybridflow" for p, _ in ALL_COMMANDS])
def test_every_option_and_argument_is_explained(path, command):
    unexplained = [param.name for param in command.params
                   if param.name != "help" and not (getattr(param, "help", None) or "").strip()]
    assert not unexplained, f"`hybridflow {' '.join(path)}`: no help for {unexplained}"


def test_version():
    assert "hybridflow" in ok(invoke("--version")).stdout


@pytest.mark.parametrize(("path", "command"), ALL_COMMANDS, ids=[" ".join(p) or "hybridflow" for p, _ in ALL_COMMANDS])
def test_help_shows_real_metavars_and_no_python_types(path, command):
    text = ok(invoke(*path, "--help")).stdout
    for python_type in ("<bool>", "<str>", "<int", "<path>", "{instance}", "{chat}"):
        assert python_type not in text, f"`hybridflow {' '.join(path)} --help` shows {python_type}"


def test_arguments_are_named_as_users_type_them():
    text = ok(invoke("sessions", "show", "--help")).stdout
    assert "INSTANCE" in text and "CHAT" in text
    assert "--limit" in text and " N " in text
    assert "PATH" in ok(invoke("replay", "--help")).stdout
