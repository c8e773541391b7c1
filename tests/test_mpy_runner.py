"""The MicroPython runner: firmware code executed on the real MicroPython VM from a test."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil_tests.emulator.runner import MicroPythonError, MicroPythonSession, run_micropython


def test_runs_on_micropython_not_cpython() -> None:
    res = run_micropython("import sys\nprint(sys.implementation.name, sys.implementation.version[:2])").check()
    assert res.stdout == "micropython (1, 29)\n"


def test_exception_comes_back_as_the_vm_traceback() -> None:
    res = run_micropython("def f():\n    raise ValueError('bad lux')\nf()")
    assert res.exit_code == 1
    assert "ValueError: bad lux" in res.stderr
    with pytest.raises(MicroPythonError, match="bad lux"):
        res.check()


@pytest.mark.parametrize(("code", "status"), [("import sys\nsys.exit(3)", 3), ("import sys\nsys.exit()", 0)])
def test_sys_exit_gives_the_exit_status(code: str, status: int) -> None:
    assert run_micropython(code).exit_code == status


def test_host_directories_are_mounted_and_importable(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("from micropython import const\nX = const(41)\n")
    res = run_micropython("import pkg\nprint(pkg.X + 1)", mounts={tmp_path: "/lib"}).check()
    assert res.stdout == "42\n"


def test_top_level_await_runs_asyncio_code() -> None:
    code = "import asyncio\nasync def main():\n    await asyncio.sleep_ms(5)\n    return 7\nprint(await main())"
    assert run_micropython(code).check().stdout == "7\n"


def test_session_keeps_state_between_runs() -> None:
    with MicroPythonSession(mounts={}) as mp:
        assert mp.run("x = [1, 2]").ok
        assert mp.run("x.append(3)\nprint(sum(x))").check().stdout == "6\n"
        failed = mp.run("print(undefined_name)")
        assert failed.exit_code == 1 and "NameError" in failed.stderr
        assert mp.run("print(len(x))").check().stdout == "3\n"
