"""What a build produced: the summary the CLI prints and the DVC metrics file holds.

Apart from :mod:`verse_etl.tables.assemble` (pandas, the contracts) so that a no-change
``verse-etl build`` can print it from the build stamp (:mod:`verse_etl.publish.stamp`) without
importing them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class BuildSummary:
    """What one build produced."""

    rows: dict[str, int]
    cases: int
    converted: int
    reused: int
    stores_written: int
    quarantined: int
    failing: int  # quarantine records whose check is set to "raise"
    checks_failed: dict[str, int] = field(default_factory=dict)
    # Per source given to the build: what became of cases an earlier build had and this one did
    # not (pruned, or kept and why; see verse_etl.publish.pruning).
    pruning: dict[str, str] = field(default_factory=dict)

    def as_rerun(self, cases: int | None = None) -> BuildSummary:
        """This build as a rerun with nothing to change reports it: its tables and quarantine,
        every one of its ``cases`` (default: its own count) reused, nothing converted, written
        or pruned."""
        n = self.cases if cases is None else cases
        return replace(self, cases=n, converted=0, reused=n, stores_written=0, pruning={})

    def to_json(self) -> str:
        """Deterministic JSON (the DVC metrics file)."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"
