"""Bench fixtures for the HIL suite (see hil_tests/plugin.py and hil_tests/README.md)."""

from hil_tests.plugin import (  # noqa: F401  (pytest finds fixtures and hooks by name here)
    board,
    board_factory,
    link,
    link_faults,
    power,
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_runtest_makereport,
    repl,
    sensors,
)
