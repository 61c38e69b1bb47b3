"""Configuration: defaults < hybridflow.toml < HYBRIDFLOW_* environment < command-line flags, and bad values.

Bad configuration must stop the program with one line naming the key and where it came from, exit code 2.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from typer.testing import Result

from hybridflow.config import CONFIG_ENV, FIELDS, Settings, load_settings
from hybridflow.errors import ConfigError
from tests.support.builders import REPO
from tests.support.cli import invoke

EXAMPLE = REPO / "hybridflow.toml.example"


pytestmark = pytest.mark.usefixtures("isolated")  # conftest: no HYBRIDFLOW_* from the shell, empty cwd


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path | None = None, environ: dict[str, str] | None = None, **overrides: object) -> str:
    """The message of the ConfigError that loading this configuration raises."""
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=environ or {}, overrides=overrides)
    return caught.value.message


def assert_one_line_error(result: Result, *fragments: str) -> None:
    """Exit code 2, one line on stderr naming every fragment, and no traceback anywhere."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert result.exception is None or isinstance(result.exception, SystemExit)


# --- defaults and precedence --------------------------------------------------------------------------------------


def test_defaults_without_file_or_environment():
    settings = load_settings(None, environ={})
    assert settings == Settings()
    assert settings.source is None
    assert settings.database_url == "sqlite:///hybridflow.db"  # a file in the working directory
    assert settings.ollama_host == "http://127.0.0.1:11434"
    assert settings.resume_after == 7200


def test_file_overrides_defaults_and_environment_overrides_file_and_flags_override_all(tmp_path):
    path = write(tmp_path / "conf" / "hf.toml", 'port = 9001\nhost = "0.0.0.0"\nresume_after = "30m"\n')
    environ = {"HYBRIDFLOW_PORT": "9002", "HYBRIDFLOW_OLLAMA_MODEL": "qwen2.5"}

    from_file = load_settings(path, environ={})
    assert (from_file.port, from_file.host, from_file.resume_after) == (9001, "0.0.0.0", 1800)
    assert from_file.ollama_model == Settings().ollama_model

    from_env = load_settings(path, environ=environ)
    assert (from_env.port, from_env.host, from_env.ollama_model) == (9002, "0.0.0.0", "qwen2.5")

    from_flags = load_settings(path, environ=environ, overrides={"port": 9003, "host": None})
    assert (from_flags.port, from_flags.host, from_flags.ollama_model) == (9003, "0.0.0.0", "qwen2.5")
    assert from_flags.resume_after == 1800


def test_explicit_config_path_beats_environment_variable_and_local_file(tmp_path):
    explicit = write(tmp_path / "explicit.toml", "port = 1001\n")
    from_env = write(tmp_path / "env.toml", "port = 1002\n")
    write(tmp_path / "hybridflow.toml", "port = 1003\n")

    settings = load_settings(explicit, environ={CONFIG_ENV: str(from_env)})
    assert settings.port == 1001
    assert settings.source == str(explicit)


def test_config_environment_variable_beats_local_file(tmp_path):
    from_env = write(tmp_path / "env.toml", "port = 1002\n")
    write(tmp_path / "hybridflow.toml", "port = 1003\n")

    settings = load_settings(None, environ={CONFIG_ENV: str(from_env)})
    assert settings.port == 1002
    assert settings.source == str(from_env)


def test_local_hybridflow_toml_is_read_when_nothing_else_names_a_file(tmp_path):
    write(tmp_path / "hybridflow.toml", "port = 1003\n")
    settings = load_settings(None, environ={})
    assert settings.port == 1003
    assert settings.source == "hybridflow.toml"


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_a_named_config_file_that_does_not_exist_is_an_error(tmp_path, how):
    missing = tmp_path / "nowhere.toml"
    if how == "flag":
        message = config_error(missing)
    else:
        message = config_error(environ={CONFIG_ENV: str(missing)})
    assert "not found" in message and str(missing) in message


# --- durations ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("45", 45), ("500ms", 0.5), ("2H", 7200), ("1.5h", 5400)],
)
def test_durations_from_the_environment(text, seconds):
    assert load_settings(None, environ={"HYBRIDFLOW_RESUME_AFTER": text}).resume_after == seconds


@pytest.mark.parametrize(("toml_value", "seconds"), [("45", 45), ("2.5", 2.5), ('"90s"', 90), ('"2h"', 7200)])
def test_durations_from_the_file_as_numbers_or_strings(tmp_path, toml_value, seconds):
    path = write(tmp_path / "hf.toml", f"resume_after = {toml_value}\n")
    assert load_settings(path, environ={}).resume_after == seconds


@pytest.mark.parametrize("text", ["2 hours", "soon", "", "-5m", "h", "5x"])
def test_unparseable_durations_name_the_key_and_the_variable(text):
    message = config_error(environ={"HYBRIDFLOW_RESUME_AFTER": text})
    assert "resume_after" in message and "HYBRIDFLOW_RESUME_AFTER" in message


@pytest.mark.parametrize("toml_value", ["-5", "true", '"later"'])
def test_unparseable_durations_in_the_file_name_the_key_and_the_file(tmp_path, toml_value):
    path = write(tmp_path / "hf.toml", f"debounce = {toml_value}\n")
    message = config_error(path)
    assert "debounce" in message and str(path) in message


# --- database URLs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "async_url"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("sqlite:////var/lib/hybridflow/x.db", "sqlite+aiosqlite:////var/lib/hybridflow/x.db"),
        ("postgresql://user:pass@db.example:5432/hf", "postgresql+asyncpg://user:pass@db.example:5432/hf"),
        ("postgres://user:pass@db.example:5432/hf", "postgresql+asyncpg://user:pass@db.example:5432/hf"),
    ],
)
def test_database_urls_are_translated_to_async_drivers(url, async_url):
    settings = load_settings(None, environ={"HYBRIDFLOW_DATABASE_URL": url})
    assert settings.database_url == url
    assert settings.async_database_url == async_url
    assert settings.is_sqlite == url.startswith("sqlite")


@pytest.mark.parametrize("url", ["mysql://user:pass@host/db", "hybridflow.db", "http://example.com/db"])
def test_unsupported_database_urls_are_refused(url):
    message = config_error(environ={"HYBRIDFLOW_DATABASE_URL": url})
    assert "database_url" in message and "HYBRIDFLOW_DATABASE_URL" in message


# --- bad values in the file ---------------------------------------------------------------------------------------

BAD_FILES = {
    "unknown key": ("colour = \"blue\"\n", "colour"),
    "port not a number": ('port = "abc"\n', "port"),
    "port out of range": ("port = 70000\n", "port"),
    "unparseable duration": ('resume_after = "whenever"\n', "resume_after"),
    "unsupported URL scheme": ('database_url = "mysql://u:p@h/db"\n', "database_url"),
    "bad log format": ('log_format = "xml"\n', "log_format"),
    "ollama host not a URL": ('ollama_host = "localhost:11434"\n', "ollama_host"),
}


@pytest.mark.parametrize(("text", "key"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_value_in_file_names_the_key_and_the_file(tmp_path, text, key):
    path = write(tmp_path / "bad.toml", text)
    message = config_error(path)
    assert f"'{key}'" in message and str(path) in message


def test_invalid_toml_names_the_file(tmp_path):
    path = write(tmp_path / "broken.toml", "port = \n")
    message = config_error(path)
    assert str(path) in message and "TOML" in message


def test_bad_flag_value_names_the_option():
    message = config_error(database_url="mysql://u@h/db")
    assert "--database-url" in message


# --- through the command line -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "key"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_cli_stops_on_a_bad_config_file_with_one_line_and_exit_code_2(tmp_path, text, key):
    path = write(tmp_path / "bad.toml", text)
    result = invoke("--config", str(path), "tenants", "list")
    assert_one_line_error(result, key, str(path))


def test_cli_stops_on_a_bad_local_hybridflow_toml(tmp_path):
    write(tmp_path / "hybridflow.toml", 'port = "abc"\n')
    assert_one_line_error(invoke("tenants", "list"), "port", "hybridflow.toml")


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [("HYBRIDFLOW_PORT", "abc", "port"), ("HYBRIDFLOW_RESUME_AFTER", "tomorrow", "resume_after"),
     ("HYBRIDFLOW_DATABASE_URL", "mysql://u@h/db", "database_url")],
)
def test_cli_stops_on_a_bad_environment_variable(variable, value, key):
    assert_one_line_error(invoke("tenants", "list", env={variable: value}), key, variable)


def test_a_misspelled_environment_variable_stops_the_cli_and_names_the_setting_meant():
    result = invoke("tenants", "list", env={"HYBRIDFLOW_SECRET_KYE": "x"})
    assert_one_line_error(result, "HYBRIDFLOW_SECRET_KYE", "did you mean 'HYBRIDFLOW_SECRET_KEY'?")


def test_an_unknown_environment_variable_is_refused_like_an_unknown_key():
    with pytest.raises(ConfigError, match="unknown environment variable HYBRIDFLOW_COLOUR"):
        load_settings(None, environ={"HYBRIDFLOW_COLOUR": "blue"})
    # The config file's own variable and the test suite's variables are not settings, and are accepted.
    assert load_settings(None, environ={"HYBRIDFLOW_TEST_POSTGRES_URL": "postgresql://x"}).port == 8000


def test_a_misspelled_key_in_the_file_names_the_key_meant(tmp_path):
    message = config_error(write(tmp_path / "typo.toml", 'resume_afer = "1h"\n'))
    assert "'resume_afer'" in message and "did you mean 'resume_after'?" in message


def test_cli_stops_on_a_missing_config_file(tmp_path):
    missing = tmp_path / "nowhere.toml"
    assert_one_line_error(invoke("--config", str(missing), "tenants", "list"), str(missing))


def test_cli_bad_database_url_flag_names_the_option():
    assert_one_line_error(invoke("--database-url", "mysql://u@h/db", "tenants", "list"), "--database-url")


# --- hybridflow.toml.example --------------------------------------------------------------------------------------

ASSIGNMENT = re.compile(r"^\s*#?\s*([a-z_]+)\s*=\s*(.+?)\s*$")


def _assignments(lines: list[str]) -> list[tuple[int, str, str]]:
    """(line number, key, value) of every setting, commented out or not."""
    found = []
    for number, line in enumerate(lines):
        match = ASSIGNMENT.match(line)
        if match and match.group(1) in FIELDS:
            found.append((number, match.group(1), match.group(2)))
    return found


def _is_explanation(line: str) -> bool:
    stripped = line.strip()
    return stripped.startswith("#") and not ASSIGNMENT.match(stripped) and bool(stripped.strip("# "))


def _explained(lines: list[str], number: int) -> bool:
    """An inline comment after the value, or an explaining comment in the block of lines just above."""
    value = ASSIGNMENT.match(lines[number]).group(2)  # type: ignore[union-attr]
    if "#" in value and not value.startswith(("'", '"')):
        return True
    above = number - 1
    while above >= 0 and lines[above].strip():
        if _is_explanation(lines[above]):
            return True
        above -= 1
    return False


def test_the_example_config_exists():
    assert EXAMPLE.is_file(), "hybridflow.toml.example is missing: README.md points every user to it"


def test_example_config_loads_as_is():
    settings = load_settings(EXAMPLE, environ={})
    assert settings.source == str(EXAMPLE)


def test_example_config_documents_every_key_with_a_comment():
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    documented: dict[str, bool] = {}
    for number, key, _value in _assignments(lines):
        documented[key] = documented.get(key, False) or _explained(lines, number)
    missing = sorted(set(FIELDS) - set(documented))
    assert not missing, f"keys absent from hybridflow.toml.example: {missing}"
    undocumented = sorted(key for key, ok in documented.items() if not ok)
    assert not undocumented, f"keys without an explaining comment: {undocumented}"


def test_every_setting_in_the_example_is_valid_when_uncommented(tmp_path):
    """A user who uncomments any line of the example must not get a ConfigError."""
    for number, key, value in _assignments(EXAMPLE.read_text(encoding="utf-8").splitlines()):
        line = f"{key} = {value}"
        try:
            tomllib.loads(line)
        except tomllib.TOMLDecodeError:
            line = f"{key} = {value.split('#', 1)[0].strip()}"  # drop an inline comment after the value
        path = write(tmp_path / f"line{number}.toml", line + "\n")
        load_settings(path, environ={})  # raises ConfigError naming the line's key if the value is bad
