"""Static checks of the library as it is installed (verse_etl with its schemas and flows):
mypy finds no type error, and every ``# type: ignore`` names its error code and says why."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.installed_tree import ROOT, install_tree, package_dirs, source_path


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_tree(tmp_path_factory.mktemp("installed"))


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_mypy_finds_no_type_error(installed: Path, tmp_path: Path) -> None:
    # A cold run, as on a clean clone: no cache is carried between runs.
    result = _run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / "mypy-cache"),
            "-p",
            "verse_etl",
            "-p",
            "verse_etl_sample",
        ],
        installed,
    )
    # Name the repository's files, not the copies.
    report = re.sub(
        r"^(verse_etl\S*?/\S+?\.py)",
        lambda m: source_path(m.group(1), installed),
        result.stdout + result.stderr,
        flags=re.MULTILINE,
    )
    assert result.returncode == 0, report


def test_every_type_ignore_names_its_code_and_reason() -> None:
    bare = []
    for folder in package_dirs().values():
        for path in sorted(folder.rglob("*.py")):
            lines = path.read_text(encoding="utf-8").splitlines()
            for n, line in enumerate(lines, 1):
                if "type: ignore" not in line:
                    continue
                # `# type: ignore[code]  # why`, or the why on the comment line just above.
                coded = re.search(r"type: ignore\[[a-z-, ]+\]", line)
                above = lines[n - 2].strip() if n > 1 else ""
                why = re.search(r"type: ignore\[[^\]]+\]\s+#\s*\S", line) or above.startswith("#")
                if not (coded and why):
                    bare.append(f"{path.relative_to(ROOT)}:{n}")
    assert not bare, "each type: ignore needs [code] and a reason: " + ", ".join(bare)


def test_layer_contracts_hold(installed: Path) -> None:
    # pyproject.toml [tool.importlinter]: the layers one way, no Prefect below flows/, the CLI
    # through verse_etl.flows' entry points. Run on the installed shape (see installed_tree).
    lint = Path(sys.executable).parent / "lint-imports"
    result = _run([str(lint), str(ROOT / "pyproject.toml"), "--no-cache"], installed)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


HEAVY = ("pydicom", "nibabel", "zarr", "prefect", "dvc", "scipy", "PIL", "duckdb", "dask")


def test_importing_the_contracts_loads_no_reader() -> None:
    # Every contract (TABLES loads all eight models): pandas and pandera, nothing of the readers,
    # stores or orchestration. A fresh interpreter: this one has imported everything already.
    code = (
        "import sys\n"
        "from verse_etl.schemas import TABLES\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "print(sorted(m for m in sys.modules if m.startswith('verse_etl')))"
    )
    result = _run([sys.executable, "-c", code], ROOT)
    assert result.returncode == 0, result.stderr
    heavy, ours = result.stdout.splitlines()
    assert heavy == "[]", f"importing the contracts loads {heavy}; library modules: {ours}"
