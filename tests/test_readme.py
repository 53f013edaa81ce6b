"""The README's two commands stay what CI and users run."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _commands():
  return re.findall(r"```bash\n(pip install -r requirements.txt && [^\n]+)\n```",
                    (ROOT / "README.md").read_text())


def test_readme_has_the_two_commands():
  main_job, tests = _commands()[:2]
  assert main_job == ("pip install -r requirements.txt && python main.py "
                      "--config=configs/demo.py --workdir=runs/demo")
  assert tests.startswith("pip install -r requirements.txt && python -m pytest")


def test_ci_runs_the_readme_test_command():
  ci = (ROOT / ".ci" / "run").read_text().splitlines()
  assert _commands()[1] in ci
