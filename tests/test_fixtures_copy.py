"""The reference fixtures in tests/fixtures/reference are verbatim copies of ../shared/fixtures."""

import filecmp

import pytest
from conftest import REFERENCE, ROOT

SHARED = ROOT.parent / "shared" / "fixtures"


def test_reference_fixtures_present():
    for sub in ("official", "scenic", "tokenizer", "dense"):
        assert any((REFERENCE / sub).iterdir()), sub
    assert (REFERENCE / "tokenizer" / "expected.json").stat().st_size > 1000


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/fixtures is not beside this checkout (fresh clone)")
def test_copies_equal_shared():
    shared_files = sorted(p.relative_to(SHARED) for p in SHARED.rglob("*") if p.is_file())
    ours = sorted(p.relative_to(REFERENCE) for p in REFERENCE.rglob("*") if p.is_file())
    assert shared_files == ours
    for rel in shared_files:
        assert filecmp.cmp(SHARED / rel, REFERENCE / rel, shallow=False), rel
