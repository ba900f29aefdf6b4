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


def test_tls_comes_with_the_plain_install():
    """ssl:/tls: endpoints need pyOpenSSL: the README's plain `pip install .` must bring it."""
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    twisted = [d for d in project["dependencies"] if re.match(r"twisted\b", d, re.IGNORECASE)]
    assert len(twisted) == 1 and re.fullmatch(r"Twisted\[tls\]>=24\.7\.0", twisted[0]), twisted
    # The test extra must not bring TLS itself, or the TLS tests would not prove the plain install works.
    names = {re.match(r"[A-Za-z0-9._-]+", d).group(0).lower() for d in project["optional-dependencies"]["test"]}
    assert not names & {"pyopenssl", "service-identity", "service_identity", "twisted"}, names


def test_no_doc_tells_users_to_install_a_tls_extra():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert [str(doc) for doc in docs if "[tls]'" in doc.read_text()] == []
