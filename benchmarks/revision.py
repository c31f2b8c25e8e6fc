"""A module of this repository as it was at a git revision, imported beside the current one, so
that a benchmark times both in one process (same imports, same load of the moment)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def module_at(revision: str, path: str, name: str) -> ModuleType:
    """``path`` (relative to the repository) as of ``revision``, imported as module ``name``."""
    text = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{revision}:{path}"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    file = Path(tempfile.mkdtemp(prefix=f"{name}-")) / f"{name}.py"
    file.write_text(text)
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module
