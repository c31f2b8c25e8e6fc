"""Code figures of issue 14's closing note: where column names are spelt out, and the longest
functions.

    .venv/bin/python benchmarks/code_figures.py [--top 10] [--files 12]

Prints

- the string literals outside ``schemas/`` that are exactly a column name of one of the table
  contracts (``"scan_id"``, ``"store_path"``, ...), in ``verse_etl/`` and ``flows/``, in total,
  per file (the largest ``--files``), and apart those of the sample generator (``verse_etl/sample``,
  since moved to ``verse_etl_sample/``: it writes source files, whose keys may share a
  column's name);
- the ``--top`` longest functions (and methods) of ``verse_etl/``, ``flows/``, ``schemas/`` and
  the sample generator,
  with their line counts (``def`` line to last line, decorators excluded).

Everything is read with :mod:`ast` (docstrings and comments are not literals that count; an
f-string's literal parts are not counted either). Column names come from the contracts
themselves (``verse_etl.schemas.TABLES``).
"""

from __future__ import annotations

import argparse
import ast
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("verse_etl", "flows")
SAMPLE = ("verse_etl/sample/", "verse_etl_sample/")


def column_names() -> set[str]:
    """Every column of every table contract."""
    from verse_etl.schemas import TABLES

    return {name for model in TABLES.values() for name in model.to_schema().columns}


def _sources(folders: tuple[str, ...]) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def _literals(tree: ast.AST) -> list[str]:
    """String constants of ``tree``, leaving out docstrings and the parts of f-strings."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            skipped |= {id(v) for v in node.values}
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                skipped.add(id(value))
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in skipped
    ]


def column_literals(columns: set[str]) -> Counter[str]:
    """``{file: literals naming a column}`` outside ``schemas/``."""
    counts: Counter[str] = Counter()
    for path in _sources((*LIBRARY, SAMPLE[1].rstrip("/"))):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        n = sum(value in columns for value in _literals(tree))
        if n:
            counts[path.relative_to(ROOT).as_posix()] = n
    return counts


def longest_functions(top: int) -> list[tuple[int, str]]:
    """``(lines, file:line name)`` of the ``top`` longest functions."""
    found = []
    for path in _sources((*LIBRARY, SAMPLE[1].rstrip("/"), "schemas")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                where = f"{path.relative_to(ROOT).as_posix()}:{node.lineno} {node.name}"
                found.append((lines, where))
    return sorted(found, key=lambda f: (-f[0], f[1]))[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--top", type=int, default=10, help="longest functions to list")
    parser.add_argument("--files", type=int, default=12, help="files to list by literal count")
    args = parser.parse_args()
    counts = column_literals(column_names())
    total = sum(counts.values())
    sample = sum(n for f, n in counts.items() if f.startswith(SAMPLE))
    print(
        f"column-name literals outside schemas/: {total} in {len(counts)} files "
        f"({total - sample} without the sample generator's {sample})"
    )
    for file, n in counts.most_common(args.files):
        print(f"  {n:4d}  {file}")
    print(f"longest functions (lines, top {args.top}):")
    for lines, where in longest_functions(args.top):
        print(f"  {lines:4d}  {where}")


if __name__ == "__main__":
    main()
