"""What a build may delete: never anything because it was left out.

An earlier build saved one result per case (``cases/<source>/<name>.json``, with the case's
stores). A case whose result this build did not produce is *stale*. Its result and stores are
deleted only when all of these hold:

- the source was given to this build at all: a source left out (``verse-etl build --verse DIR``
  without ``--mosmed``, an empty ``sources.mosmed``) is neither ingested nor touched;
- pruning was asked for (``--prune`` or ``params.yaml: build.prune: true``); otherwise the stale
  cases are kept, named in the log and in the build summary;
- the source folder exists: an unmounted disk looks exactly like a missing folder;
- at most ``build.prune_max_loss`` of the previous cases went away: an empty folder (all gone)
  or a half-copied one refuses unless that limit is 1.

A refusal is not an error: the build goes on with what it found, keeps everything else and says
why nothing was pruned. What is pruned is logged case by case.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from verse_etl.cases.outputs import SOURCES, load_case_results, prune_source
from verse_etl.cases.records import CaseResult
from verse_etl.params import BuildParams
from verse_etl.paths import case_result_name
from verse_etl.publish.staging import load_saved_results, prune_target, saved_case_names
from verse_etl.tables.generations import collect_garbage, published_store_paths
from verse_etl.targets import Target, is_url

DERIVED_CASE_IDS: tuple[str, ...] = ("_discovery", "_duplicates")
"""Results a source computes as a whole on every build that hold only quarantine records about
the source as it is now (files discovery cannot place, copies left out): replaced, never counted
as stale. The VerSe'19 fracture grades hold rows, so they count as a case: a grading spreadsheet
that went away is not pruned by omission either."""

_NAMED = 10  # stale cases named one by one in a message; the rest are counted


@dataclass(frozen=True)
class PruneDecision:
    """What happens to the stale cases of one source.

    ``stale`` holds the case-result names (``<case>.json``; see
    :func:`verse_etl.paths.case_result_name`) an earlier build saved and this one did not
    produce; ``prune`` says whether they are deleted; ``reason`` is one line for the log and
    the build summary.
    """

    source: str
    stale: tuple[str, ...]
    prune: bool
    reason: str
    root_found: bool = True

    @property
    def noteworthy(self) -> bool:
        """True if there is something to tell (stale cases, or a folder not found)."""
        return bool(self.stale) or not self.root_found


def derived_names(source: str) -> frozenset[str]:
    """Case-result names of the results ``source`` derives as a whole (never stale)."""
    return frozenset(case_result_name(source, case_id) for case_id in DERIVED_CASE_IDS)


def decide_pruning(
    source: str,
    root: str,
    root_found: bool,
    previous: Iterable[str],
    current: Iterable[str],
    enabled: bool,
    max_loss: float,
) -> PruneDecision:
    """Decide whether the stale cases of ``source`` go.

    Parameters
    ----------
    source, root
        The source and its folder (for the messages).
    root_found
        Whether the folder exists (discovery ran).
    previous, current
        Case-result names saved by earlier builds, and produced by this one.
    enabled
        Pruning asked for (``--prune``, ``build.prune``).
    max_loss
        Largest fraction of the previous cases that may be pruned at once (0..1).

    Examples
    --------
    >>> decide_pruning("verse", "src", True, ["a.json", "b.json"], ["a.json"], False, 0.5).reason
    '1 case(s) no longer in src kept: b; pass --prune (or set build.prune: true) to remove them'
    >>> decide_pruning("verse", "src", True, ["a.json", "b.json"], [], True, 0.5).prune
    False
    """
    derived = derived_names(source)
    before = sorted(set(previous) - derived)
    now = set(current)
    stale = tuple(name for name in before if name not in now)
    ids = ", ".join(n.removesuffix(".json") for n in stale[:_NAMED])
    ids += f" and {len(stale) - _NAMED} more" if len(stale) > _NAMED else ""

    def decision(prune: bool, reason: str) -> PruneDecision:
        return PruneDecision(source, stale, prune, reason, root_found)

    if not root_found:
        return decision(
            False,
            f"{root}: {source} source folder not found; kept all {len(before)} case(s) of the "
            "previous build, nothing pruned (an unmounted disk looks the same); fix the path",
        )
    if not stale:
        return decision(False, f"{source}: nothing to prune")
    lost = len(stale) / len(before)
    if not now - derived:
        why = (
            f"{root}: {source} source folder holds no cases (the previous build had {len(before)})"
        )
    else:
        why = (
            f"{root}: {len(stale)} of the previous {len(before)} {source} case(s) are gone "
            f"({lost:.0%})"
        )
    if lost > max_loss:
        return decision(
            False,
            f"{why}, more than build.prune_max_loss ({max_loss:.0%}); kept them all, nothing "
            f"pruned ({ids}); check the source, or raise the limit to prune",
        )
    if not enabled:
        return decision(
            False,
            f"{len(stale)} case(s) no longer in {root} kept: {ids}; pass --prune (or set "
            "build.prune: true) to remove them",
        )
    return decision(True, f"pruning {len(stale)} case(s) no longer in {root}: {ids}")


def settle_source(
    out: str,
    work: Path,
    source: str,
    root: str,
    root_found: bool,
    results: Sequence[CaseResult],
    enabled: bool,
    max_loss: float,
) -> tuple[PruneDecision, list[str]]:
    """After ingesting ``source`` (``results``: this build's cases and derived results, already
    saved), delete what :func:`decide_pruning` allows at ``out`` (a folder or a URL; ``work``
    is the local work folder of a URL build).

    Stale cases that stay keep their result and stores. Leftovers of killed writers and stores
    a rebuilt case no longer has go either way (they belong to no published case). Returns the
    decision and the paths deleted (relative to ``out`` for a URL, else full paths).
    """
    decision = decide_pruning(
        source,
        root,
        root_found,
        saved_case_names(out, source),
        [case_result_name(source, r.case_id) for r in results],
        enabled,
        max_loss,
    )
    if not root_found:
        return decision, []
    keep = list(results)
    if not decision.prune:
        keep += load_saved_results(out, work, source, decision.stale)
    # Stores the published tables point at stay until new tables replace them.
    published = _published(out, work)
    removed = [str(p) for p in prune_source(work, source, keep, published)]
    removed += prune_target(out, source, keep, published)
    return decision, removed


def _published(out: str, work: Path) -> set[str]:
    if not is_url(out):
        return published_store_paths(work)
    target = Target(out)
    return published_store_paths(target.path(target.published_root()), target.fs)


def collect_garbage_after_switch(params: BuildParams) -> list[str]:
    """Once new tables are published, delete the stores of the sources given to the build that
    neither they nor a saved case result point at (the old generation's). Returns the paths."""
    from verse_etl.publish.staging import local_root

    sources = [s for s in SOURCES if getattr(params.sources, s)]
    work = local_root(params.out, params.work)
    if not is_url(params.out):
        return [str(p) for p in collect_garbage(work, sources, load_case_results(work, sources))]
    results = load_case_results(work, sources)  # fetched from the target by the tables step
    published = _published(params.out, work)
    return [r for s in sources for r in prune_target(params.out, s, results, published)]
