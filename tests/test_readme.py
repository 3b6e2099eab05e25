"""The README's first Python snippet runs as written, on a model folder where it looks for the main job's; every
relative link in README.md and docs/ resolves, and the README links every docs page."""

import re
import shutil

import numpy as np
import torch
from conftest import ROOT


def _first_python_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Using a TIPS model", 1)[1]
    return section.split("```python", 1)[1].split("```", 1)[0]


def test_readme_usage_snippet_runs(converted_official, tmp_path, monkeypatch):
    code = _first_python_block()
    assert '"outputs/tiny-cpu/final"' in code  # the main job's output folder, relative to the checkout
    shutil.copytree(converted_official["v1-mlp-224"], tmp_path / "outputs" / "tiny-cpu" / "final")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    out, features = namespace["out"], namespace["features"]
    assert out.logits_per_image.shape == out.synthetic_logits_per_image.shape == (1, 2)
    torch.testing.assert_close(out.logits_per_image, out.logits_per_text.T)
    width = namespace["model"].config.vision_config.hidden_size
    grid = namespace["processor"].image_processor.size["height"] // 14
    assert features.alt_text_embeds.shape == features.synthetic_embeds.shape == (1, width)
    assert features.patch_embeds.shape == (1, grid, grid, width)
    scores = namespace["scores"]
    assert sorted(s["label"] for s in scores) == ["circle", "square"]
    assert abs(sum(s["score"] for s in scores) - 1.0) < 1e-5
    embedding = np.asarray(namespace["embedding"])
    np.testing.assert_allclose(embedding, torch.nn.functional.normalize(features.alt_text_embeds, dim=-1), atol=1e-5)


# --- links: the README and the docs pages it points to --------------------------------------------------------------

_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _pages() -> list:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans blanked (neither holds links or headings)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(re.sub(r"`[^`]*`", "code", line))
    return lines


def _anchors(path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, repeats numbered -1, -2, ..."""
    seen: dict[str, int] = {}
    anchors = set()
    fenced = False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        match = None if fenced else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_readme_and_docs_relative_links_resolve():
    """Every relative link (and image) in README.md and docs/**/*.md names an existing file, and every #anchor into a
    Markdown file names one of its headings."""
    broken, checked = [], 0
    for page in _pages():
        for line in _prose(page.read_text()):
            for target in _LINK.findall(line):
                if re.match(r"[a-z][a-z0-9+.-]*:", target, flags=re.I):  # https:, mailto:, ...
                    continue
                checked += 1
                name, _, anchor = target.partition("#")
                resolved = (page.parent / name).resolve() if name else page
                where = f"{page.relative_to(ROOT)}: {target}"
                if not resolved.exists():
                    broken.append(f"{where} (no such file)")
                elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                    broken.append(f"{where} (no heading #{anchor} in {resolved.relative_to(ROOT)})")
    assert checked > 30, checked  # the README's documentation table alone has 14
    assert not broken, "\n".join(broken)


def test_readme_links_every_docs_page_and_each_says_where_to_run():
    """The README is the way in: it links every top-level docs page, and each page says its commands run from the
    repository root."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for page in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "docs" / "tuning" / "README.md"]:
        name = page.relative_to(ROOT).as_posix()
        assert f"]({name}" in readme, f"README.md does not link {name}"
        assert "from the repository root" in "\n".join(page.read_text().splitlines()[:6]), name


def test_anchor_slugs_follow_github():
    page = ROOT / "docs" / "design.md"
    assert {"the-models-interface", "design-notes-and-deviations", "repository-layout"} <= _anchors(page)
    assert "3-expected-values-googles-readme-and-the-commands" in _anchors(ROOT / "docs" / "evaluation.md")
