"""Repository invariants: the README's first two commands, and .ci/run running exactly the README's test command."""

from conftest import ROOT


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.strip().splitlines() if line.strip() and not line.startswith("#")]


def test_readme_starts_with_two_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    assert commands[0].startswith("pip install") and "pytest" in commands[1]


def test_ci_runs_exactly_the_readme_test_command():
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert _readme_commands()[1] in ci_lines


def test_every_package_data_file_is_shipped_in_the_wheel():
    """A non-module file under tips_hf/ that no package-data pattern names would be missing from `pip install .`."""
    import pytest

    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    package = ROOT / "tips_hf"
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["tips_hf"]
    shipped = {path for pattern in patterns for path in package.glob(pattern)}
    data = {
        path
        for path in package.rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts
    }
    assert data, "the embedded scenes tokenizer at least is package data"
    assert not data - shipped, f"not in [tool.setuptools.package-data]: {sorted(map(str, data - shipped))}"
    assert package / "data" / "scenes_tokenizer.model" in shipped and package / "py.typed" in shipped
