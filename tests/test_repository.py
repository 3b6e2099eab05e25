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


def test_ci_tests_the_declared_lower_bounds():
    """Stage 3 of .ci/run pins each dependency to the lower bound pyproject.toml declares (`x==5.14.*` for `x>=5.14`)."""
    import re

    import pytest

    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {}
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["train"]]:
        name, _, bound = requirement.partition(">=")
        declared[name.strip().lower().replace("-", "_")] = bound.strip()
    pins = re.findall(r"([A-Za-z_-]+)==([0-9][0-9.]*[0-9])", (ROOT / ".ci" / "run").read_text())
    pinned = {name.lower().replace("-", "_"): version for name, version in pins}
    for name in ("transformers", "accelerate", "datasets", "peft", "evaluate", "huggingface_hub", "torch"):
        pin, bound = pinned.get(name), declared[name]  # torch==2.14.1 is the lowest release of torch>=2.14
        assert pin is not None and (pin == bound or pin.startswith(bound + ".")), (name, pin, bound)
