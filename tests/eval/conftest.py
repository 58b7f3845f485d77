"""lmms-eval tests run only where the ``lmms`` extra is installed (CI installs it)."""

import importlib.util

import pytest

HAS_LMMS = importlib.util.find_spec("lmms_eval") is not None


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason='needs lmms-eval (pip install "core-attn[eval]", see the README)')
    for item in items:
        if "lmms_eval" in item.keywords and not HAS_LMMS:
            item.add_marker(skip)
