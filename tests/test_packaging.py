"""vibench installs beside current PyMC: on Python 3.12, pip resolves vibench with PyMC 6, which
needs ArviZ >= 1.1 (an ArviZ pin below 1 made that ResolutionImpossible)."""

import json
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _python312() -> str:
    found = subprocess.run(["bash", str(ROOT / ".ci" / "find-python"), "3.12"], capture_output=True, text=True)
    if found.returncode != 0:
        pytest.skip(found.stderr.strip())
    return found.stdout.strip()


@pytest.mark.slow
@pytest.mark.index
def test_pip_resolves_vibench_with_pymc_6_on_python_312(tmp_path):
    python = _python312()
    probe = subprocess.run([python, "-m", "pip", "index", "versions", "pymc"], capture_output=True, text=True, timeout=300)
    if probe.returncode != 0:
        pytest.skip(f"the package index is unreachable from {python}: {probe.stderr.strip()[-500:]}")
    report = tmp_path / "report.json"
    done = subprocess.run(
        [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
         str(ROOT), "pymc>=6"],
        capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    versions = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in json.loads(report.read_text())["install"]}
    assert int(versions["pymc"].split(".")[0]) >= 6
    assert tuple(int(part) for part in versions["arviz"].split(".")[:2]) >= (1, 3)
    assert "vibench" in versions and "arviz-stats" in versions
