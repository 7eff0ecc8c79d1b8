"""Marks for the notebooks: nbval collects each cell of notebooks/*.ipynb as a test, and a cell
cannot carry a marker, so every notebook item is marked slow here and ``pytest -m "not slow"``
leaves the notebooks out. The notebooks show ArviZ 1.x's calls (arviz-stats, arviz-plots), so on
ArviZ 0.23 (Python 3.10 and 3.11) they are skipped."""

import pytest

from vibench import arviz_compat


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
            if arviz_compat.MAJOR < 1:
                item.add_marker(pytest.mark.skip(reason="the notebooks use ArviZ 1.x (Python >= 3.12); ArviZ 0.23 is installed"))
