"""The ``cityedge`` command itself: version, help, and how failures reach the user."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cityedge import __version__, cli
from cityedge.errors import CityedgeError, ConfigError, crash_log


def test_version_is_printed_by_the_installed_command() -> None:
    out = subprocess.run([sys.executable, "-m", "cityedge", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.strip() == f"cityedge {__version__}"


def test_no_subcommand_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: cityedge" in capsys.readouterr().out


def test_user_errors_print_a_sentence_and_a_hint_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(_args: object) -> int:
        raise CityedgeError("port /dev/ttyUSB0 is busy", hint="close the other program", exit_code=3)

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: _with_func(parser, boom))
    assert cli.main(["x"]) == 3
    err = capsys.readouterr().err
    assert err == "error: port /dev/ttyUSB0 is busy\nhint: close the other program\n"


def test_internal_errors_go_to_a_crash_log(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))

    def boom(_args: object) -> int:
        raise KeyError("surprise")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: _with_func(parser, boom))
    assert cli.main(["x"]) == cli.EX_INTERNAL
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("error: internal error: KeyError")
    log = crash_log()
    assert "Traceback" in log.read_text()


def test_config_error_names_file_and_key() -> None:
    err = ConfigError("/etc/cityedge/gateway.toml", "uplink.port", "must be an integer from 1 to 65535")
    assert str(err) == "/etc/cityedge/gateway.toml: uplink.port: must be an integer from 1 to 65535"
    assert err.exit_code == 78


def _with_func(parser: object, func: object) -> object:
    import argparse

    assert isinstance(parser, argparse.ArgumentParser)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub.add_parser("x").set_defaults(func=func)
    return parser
