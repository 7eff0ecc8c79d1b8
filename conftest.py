"""Marks for the notebooks: nbval collects each cell of notebooks/*.ipynb as a test, and a cell
cannot carry a marker, so every notebook item is marked slow here and ``pytest -m "not slow"``
leaves the notebooks out."""

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
