"""Behaviour does not change under refactoring: the session's tiny sample build (every table but
the quarantine and the fracture grades, which it leaves empty, and every store) equals the
committed digest manifest file by file (see tests/output_digests.py for what is compared and how
to regenerate the manifest). The quarantine paths are covered by the bad-input corpus' build
(``test_bad_input_corpus.py::test_corpus_output_digests``)."""

from __future__ import annotations

from tests.output_digests import build_digests, check_manifest


def test_tiny_build_output_digests(tiny_build) -> None:
    out, src, _ = tiny_build
    digests = build_digests(out, src)
    assert any(p.startswith("volumes/") for p in digests), "no store was compared"
    assert sum(p.startswith("tables/") for p in digests) >= 8, "not every table was compared"
    check_manifest("tiny_build", digests)
