"""Every error a user can cause is a VerseEtlError that reads "path: what is wrong (expected, got);
what to do", and the command line prints it as one line instead of a traceback."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from typer.testing import CliRunner

from verse_etl.cases.outputs import load_case_results
from verse_etl.cli import app
from verse_etl.errors import (
    BuildFailed,
    InputError,
    ParamsError,
    StaleResultError,
    UnknownCaseError,
    VerseEtlError,
)
from verse_etl.paths import CASES_DIR
from verse_etl.read.export import export_nnunet
from verse_etl.tables.dictionary import update_readme

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = [ROOT / "verse_etl", ROOT / "schemas", ROOT / "flows", ROOT / "verse_etl_sample"]

# Bare builtin raises that are not the user's doing: a broken promise between our own modules (a
# caller passing what the signature forbids) or a platform limit. Keyed by a piece of the message,
# which survives a module move. Anything else a user can reach derives from VerseEtlError.
INTERNAL_RAISES = {
    "unknown source": "paths: callers pass a source of SOURCES only (the CLI restricts choices)",
    "slab at": "stream protocol between our own writer and reader",
    "does not continue the stream": "stream protocol between our own writer and reader",
    "cannot be stored as": "stream protocol: the caller checked the dtype before",
    "stream stopped at slice": "stream protocol between our own writer and reader",
    "reader of": "stream protocol: the reader's dtype was chosen by the writer",
    "cannot read": "slab reader called out of order by our own writer",
    "out must be Fortran-ordered": "slab reader's buffer comes from our own writer",
    "depth must be positive": "slab reader's depth comes from StoreParams, checked on load",
    "big-endian hosts": "a platform limit, not an input (never on x86-64 or arm64 Linux)",
    "unknown output format": "the CLI's --format is a Literal choice",
    "no NIfTI-1 datatype": "stores hold int16/uint8/uint16 only (checked when written)",
    "fmt must be one of": "centroid format names come from our own readers",
    "axis codes": "geometry helpers called with codes from axcodes()",
    "expected three axis codes": "geometry helpers called with codes from axcodes()",
    "InstanceNumber is": "caught by the MosMed case and quarantined (instance_order)",
    "slices (expected at least 3": "tilt resampling runs only on series check_series sorted",
    "slice positions are not strictly": "tilt resampling runs only on series check_series sorted",
    "cannot fingerprint": "fingerprints are taken of our own parameter dataclasses",
    "is not a value a case result keeps": "json's default hook (TypeError is its protocol): "
    "case builders put plain values in rows",
    "add_chunk counts integer": "histograms are fed the store's integer voxels",
    "validation did not settle": "unreachable guard (pragma: no cover)",
    "does not fit array": "stream protocol: slab shapes come from our own reader",
    "must end with level '0'": "array names are made by our own store writer",
    "slab of shape": "stream protocol: slab shapes come from our own reader",
    "stream stopped before the array was full": "stream protocol between our own writer and reader",
    "more voxels than the array holds": "stream protocol between our own writer and reader",
    "frame of": "the store writer frames each level from the array's own shape",
    "in a store framed for": "the case builders frame a store from the shape they write into it",
    "pyramid needs an even chunk depth": "VolumeParams refuses odd chunks with a pyramid on load",
    "not one grid up to axis permutation": "a table row's affine and store_affine are written "
    "together, from one frame",
    # The sample generator (a developer tool): preconditions on its own parameters.
    "base dataset must not hold": "sample generator precondition",
    "slabs cover": "sample generator precondition",
    "does not fit volume": "sample generator precondition",
    "noise_hu > 0 needs": "sample generator precondition",
    "endplates cross everywhere": "sample generator precondition",
    "expected a 2-D 16-bit array": "sample generator precondition",
    "KeyError(label)": "sample generator: Phantom.vertebra is a mapping-style lookup",
}
# Not errors: a stop request travels like KeyboardInterrupt, past every handler of errors.
NOT_ERRORS = {
    "BuildStopped": "a signal asked the build to stop (a BaseException on purpose)",
    "NotPlain": "flows/parameters.py: caught where raised, it hands the value to Prefect's encoder",
}
# OSError is left out: raised with an errno it is the operating system's answer, handled as such.
BUILTINS = {"ValueError", "RuntimeError", "TypeError", "KeyError", "Exception"}


def _sources() -> list[tuple[Path, ast.Module]]:
    return [
        (path, ast.parse(path.read_text(encoding="utf-8")))
        for folder in LIBRARY
        for path in sorted(folder.rglob("*.py"))
    ]


@pytest.fixture(scope="module")
def sources() -> list[tuple[Path, ast.Module]]:
    return _sources()


def test_every_exception_class_derives_from_verse_etl_error(
    sources: list[tuple[Path, ast.Module]],
) -> None:
    classes = {
        node.name: (path, [ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases])
        for path, tree in sources
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    }

    def ours(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name == "VerseEtlError":
            return True
        if name not in classes or name in seen:
            return False
        return any(ours(base, seen | {name}) for base in classes[name][1])

    def exception(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name in BUILTINS or (name.endswith(("Error", "Exception")) and name not in classes):
            return True
        if name not in classes or name in seen:
            return False
        return any(exception(base, seen | {name}) for base in classes[name][1])

    outside = sorted(
        f"{path.relative_to(ROOT)}: {name}({', '.join(bases)})"
        for name, (path, bases) in classes.items()
        if exception(name) and not ours(name) and name not in NOT_ERRORS
    )
    assert not outside, "exception classes outside the VerseEtlError hierarchy: " + "; ".join(
        outside
    )


def test_bare_builtin_raises_are_internal_only(sources: list[tuple[Path, ast.Module]]) -> None:
    bare = []
    for path, tree in sources:
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            name = ast.unparse(node.exc.func)
            if name not in BUILTINS:
                continue
            text = " ".join(
                v.value
                for arg in node.exc.args
                for v in ast.walk(arg)
                if isinstance(v, ast.Constant) and isinstance(v.value, str)
            )
            text += " " + ast.unparse(node.exc)
            if not any(key in text for key in INTERNAL_RAISES):
                bare.append(f"{path.relative_to(ROOT)}:{node.lineno} {text[:80]!r}")
    assert not bare, "user-reachable errors must derive from VerseEtlError: " + "; ".join(bare)


def test_stale_case_result_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    folder = tmp_path / CASES_DIR / "verse"
    folder.mkdir(parents=True)
    (folder / "sub-1.json").write_text('{"format": 0}', encoding="utf-8")
    with pytest.raises(StaleResultError) as caught:
        load_case_results(tmp_path, ["verse"])
    assert isinstance(caught.value, VerseEtlError) and isinstance(caught.value, ValueError)
    assert str(caught.value).startswith(f"{folder / 'sub-1.json'}: case result of an older format")
    assert str(caught.value).endswith("rerun `verse-etl ingest`")


def test_readme_without_generated_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no overview here\n", encoding="utf-8")
    with pytest.raises(InputError, match=f"^{readme}: no generated table overview"):
        update_readme(readme.read_text(), {}, readme)
    result = CliRunner().invoke(
        app, ["dictionary", "--out", str(tmp_path / "dd.md"), "--readme", str(readme)]
    )
    output = " ".join(result.output.split())
    assert result.exit_code == 2, output
    assert "no generated table overview" in output and "Traceback" not in output
    assert not (tmp_path / "dd.md").exists()  # nothing written


def test_export_refuses_bad_dataset_id_before_reading(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"expected an id 1\.\.999 .* got 1000, 'VerSe'"):
        export_nnunet(tmp_path / "no-build", tmp_path / "out", 1000, "VerSe")
    assert not (tmp_path / "out").exists()


def test_moved_and_rebased_errors_keep_their_behaviour() -> None:
    from verse_etl.stores.shards import StoreMismatchError

    assert issubclass(StoreMismatchError, VerseEtlError)
    assert (BuildFailed.exit_code, BuildFailed.label) == (1, "build failed")
    # Dataset[...] callers that catch KeyError keep working; the CLI prints a sentence.
    error = UnknownCaseError("/b: no case 'x' in this build")
    assert isinstance(error, KeyError) and str(error) == "/b: no case 'x' in this build"
