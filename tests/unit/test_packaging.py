"""The repository's promises about itself: CI runs the README's test command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readmeCommands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    return [line.strip() for line in lines if line.startswith("    ") and ".venv/bin/" in line]


def test_ci_runs_the_readme_test_command():
    testCommand = next(c for c in readmeCommands() if "pytest" in c)
    ciLines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert testCommand in ciLines


def test_readme_run_command_starts_the_plugin():
    runCommand = readmeCommands()[0]
    assert "pip install ." in runCommand and runCommand.endswith("twistd -n --pidfile= echofile")


def test_no_init_files_in_the_plugin_folders():
    assert not (ROOT / "twisted" / "__init__.py").exists()
    assert not (ROOT / "twisted" / "plugins" / "__init__.py").exists()
