import shlex
import subprocess
import sys
from pathlib import Path

from vibench.cli import lab_argv, main, notebooks_dir


def test_demo_fits_eight_schools_and_prints_a_summary(capsys):
    assert main(["demo", "--steps", "300", "--particles", "2"]) == 0
    out = capsys.readouterr().out
    assert "eight_schools" in out and "ELBO" in out and "theta[7]" in out and "tau" in out


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


def test_lab_help_and_unknown_options_of_other_commands():
    out = subprocess.run([sys.executable, "-m", "vibench.cli", "lab", "--help"], capture_output=True, text=True, check=True)
    assert "JupyterLab" in out.stdout and "--dry-run" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "vibench.cli", "demo", "--port", "1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unrecognized arguments: --port 1" in bad.stderr
