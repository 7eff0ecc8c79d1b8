import subprocess
import sys

from vibench.cli import main


def test_demo_fits_eight_schools_and_prints_a_summary(capsys):
    assert main(["demo", "--steps", "300", "--particles", "2"]) == 0
    out = capsys.readouterr().out
    assert "eight_schools" in out and "ELBO" in out and "theta[7]" in out and "tau" in out


def test_bad_arguments_exit_with_a_message(capsys):
    assert main(["demo", "--steps", "0"]) == 2
    assert "num_steps must be an integer >= 1" in capsys.readouterr().err


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "vibench.cli", "--help"], capture_output=True, text=True, check=True)
    assert "demo" in out.stdout
