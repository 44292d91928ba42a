"""The CLI prints earthcast's own errors as one line and lets anything unexpected keep its traceback."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from earthcast import cli
from earthcast.errors import ConfigError, EarthcastError, MissingVariableError


def _command(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    """Route ``earthcast boom`` to a module whose ``main`` raises ``error``."""
    module = types.ModuleType("earthcast_test_boom")

    def main(argv: list[str]) -> int:
        raise error

    module.main = main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "earthcast_test_boom", module)
    monkeypatch.setitem(cli.COMMANDS, "boom", ("earthcast_test_boom", "test"))


def test_earthcast_errors_print_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("EARTHCAST_DEBUG", raising=False)
    _command(monkeypatch, MissingVariableError("Variable 'x' is not in the store; add it"))
    assert cli.main(["boom"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "earthcast boom: error: Variable 'x' is not in the store; add it"
    assert "Traceback" not in err


def test_unexpected_errors_keep_their_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain ValueError (a bug, not an error raised on purpose) is not swallowed into one line."""
    _command(monkeypatch, ValueError("operands could not be broadcast together"))
    with pytest.raises(ValueError, match="broadcast"):
        cli.main(["boom"])


def test_debug_shows_the_traceback_of_our_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EARTHCAST_DEBUG", "1")
    _command(monkeypatch, ConfigError("bad setting; fix it"))
    with pytest.raises(ConfigError):
        cli.main(["boom"])


def test_real_bad_input_is_an_earthcast_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real bad input through a real command: a missing store is one clear line, exit 2."""
    assert cli.main(["data", "info", str(tmp_path / "nope.zarr")]) == 2
    assert "No Zarr store at" in capsys.readouterr().err
    assert issubclass(MissingVariableError, KeyError) and issubclass(MissingVariableError, EarthcastError)
    assert str(MissingVariableError("no quotes")) == "no quotes"


def test_bad_options_exit_2_with_the_parser_message(capsys: pytest.CaptureFixture[str]) -> None:
    """rollout, plot and demo parse their config dataclasses: a bad option exits 2 naming the field, as
    argparse did, before any work starts."""
    required = ["--data", "d.zarr", "--inits", "2020-01-01T00", "--lead", "1d", "--out", "f.zarr"]
    for argv, message in [
        (["rollout", "--checkpoint", "c.ckpt", *required, "--members", "two"], 'key "members"'),
        (["rollout", *required], "required: checkpoint"),
        (["plot", "maps", "--forecast", "f.zarr", "--truth", "t.zarr", "--out", "p"], "variables"),
        (["demo", "--retrain", "maybe"], "maybe"),
    ]:
        with pytest.raises(SystemExit) as bad:
            cli.main(argv)
        assert bad.value.code == 2, argv
        assert message in capsys.readouterr().err, argv
