import shlex
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from jax.experimental.compilation_cache import compilation_cache

from vibench.cache import cache_environment, default_cache_dir
from vibench.cli import lab_argv, main, notebooks_dir


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    """The user's cache folder in a temporary one, and JAX's cache settings restored afterwards
    (the demo turns the persistent cache on for the whole process)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    before = jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs
    yield tmp_path
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
    compilation_cache.reset_cache()


@pytest.mark.slow
def test_demo_fits_eight_schools_and_prints_a_summary(capsys, cache_home):
    assert main(["demo", "--steps", "300", "--particles", "2"]) == 0
    out = capsys.readouterr().out
    assert "eight_schools" in out and "ELBO" in out and "theta[7]" in out and "tau" in out
    # Its programs went to the persistent compilation cache, for the next demo to load.
    assert default_cache_dir() == cache_home / "vibench" / "jax"
    assert jax.config.jax_compilation_cache_dir == str(default_cache_dir())
    assert any(default_cache_dir().iterdir())


def test_lab_kernels_inherit_the_compilation_cache_unless_one_is_set(cache_home):
    env = cache_environment({"PATH": "/bin"})
    assert env["JAX_COMPILATION_CACHE_DIR"] == str(cache_home / "vibench" / "jax") and env["PATH"] == "/bin"
    assert float(env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]) == 0.0
    mine = cache_environment({"JAX_COMPILATION_CACHE_DIR": "/data/jax", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "2"})
    assert mine["JAX_COMPILATION_CACHE_DIR"] == "/data/jax" and mine["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "2"


def test_bad_arguments_exit_with_a_message(capsys):
    assert main(["demo", "--steps", "0"]) == 2
    assert "num_steps must be an integer >= 1" in capsys.readouterr().err


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "vibench.cli", "--help"], capture_output=True, text=True, check=True)
    assert "demo" in out.stdout and "lab" in out.stdout


def checkout(tmp_path, name="vibench"):
    root = tmp_path / "checkout"
    (root / "notebooks").mkdir(parents=True)
    (root / "vibench").mkdir()
    (root / "pyproject.toml").write_text(f'[project]\nname = "{name}"\n')
    return root


def test_lab_opens_the_checkouts_notebooks(tmp_path):
    root = checkout(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    argv = lab_argv(["--port", "8890", "--no-browser"], cwd=elsewhere, package_dir=root / "vibench", executable="py")
    assert argv == ["py", "-m", "jupyter", "lab", f"--notebook-dir={root / 'notebooks'}", "--port", "8890", "--no-browser"]
    # Installed from elsewhere but run inside a checkout (or a folder below it): that checkout.
    assert notebooks_dir(cwd=root / "vibench", package_dir=tmp_path / "site-packages" / "vibench") == root / "notebooks"


def test_lab_outside_a_checkout_opens_the_current_folder(tmp_path):
    other = checkout(tmp_path, name="another-project")  # a notebooks/ folder, but not vibench's
    assert notebooks_dir(cwd=other, package_dir=tmp_path / "site-packages" / "vibench") == other
    argv = lab_argv([], cwd=other, package_dir=tmp_path / "site-packages" / "vibench", executable="py")
    assert argv == ["py", "-m", "jupyter", "lab", f"--notebook-dir={other}"]


def test_lab_keeps_a_folder_given_to_jupyterlab(tmp_path):
    for option in ("--notebook-dir=/data", "--ServerApp.root_dir=/data"):
        argv = lab_argv([option], cwd=tmp_path, package_dir=checkout(tmp_path / option[2:9]) / "vibench", executable="py")
        assert argv == ["py", "-m", "jupyter", "lab", option]


def test_lab_dry_run_prints_the_command_of_this_checkout(capsys):
    assert main(["lab", "--dry-run", "--no-browser"]) == 0
    out = capsys.readouterr().out.strip()
    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    assert out.startswith(f"{sys.executable} -m jupyter lab --notebook-dir=") and out.endswith(" --no-browser")
    assert Path(shlex.split(out)[4].split("=", 1)[1]) == notebooks


@pytest.mark.slow
def test_lab_help_and_unknown_options_of_other_commands():
    out = subprocess.run([sys.executable, "-m", "vibench.cli", "lab", "--help"], capture_output=True, text=True, check=True)
    assert "JupyterLab" in out.stdout and "--dry-run" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "vibench.cli", "demo", "--port", "1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unrecognized arguments: --port 1" in bad.stderr
