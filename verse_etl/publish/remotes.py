"""Where a release's data can be pulled from, and the exact commands a consumer runs to get it.

The project's default DVC remote is the folder ``.dvc-storage`` beside the code (``.dvc/config``:
``url = ../.dvc-storage``, relative to ``.dvc/``), so that ``make run`` works offline. DVC resolves
that path in every clone: a fresh clone elsewhere looks for ``<clone>/.dvc-storage``, finds nothing
and ``dvc pull`` ends in "Checkout failed". A consumer on the same machine points the clone at the
producer's folder with a clone-local setting (``dvc remote modify --local``, never committed), or
passes it to ``dvc get``/``dvc import`` (``--remote-config url=...``); consumers on other machines
need a remote they can reach (``dvc remote add -d team s3://...``). :func:`consumer_commands` writes
the commands that apply to a repository's default remote; release notes carry them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG = Path(".dvc") / "config"
LOCAL_CONFIG = Path(".dvc") / "config.local"


@dataclass(frozen=True)
class Remote:
    """A repository's default DVC remote as committed, and where it points from the repo."""

    name: str
    url: str  # as written in the committed .dvc/config
    resolved: str  # an absolute path for folder remotes, else the URL

    @property
    def is_folder(self) -> bool:
        """A folder on this machine (not an object store or server)."""
        return "://" not in self.url

    @property
    def clone_relative(self) -> bool:
        """A relative folder: every clone resolves it inside itself, so other clones miss it."""
        return self.is_folder and not Path(self.url).is_absolute()


def default_remote(repo: Path) -> Remote | None:
    """The default remote of ``repo`` from its committed ``.dvc/config`` (None if it has none).

    Examples
    --------
    >>> import tempfile
    >>> repo = Path(tempfile.mkdtemp())
    >>> (repo / ".dvc").mkdir()
    >>> _ = (repo / CONFIG).write_text(
    ...     "[core]\\n    remote = local\\n['remote \\"local\\"']\\n    url = ../.dvc-storage\\n")
    >>> r = default_remote(repo)
    >>> r.clone_relative, r.resolved == str(repo / ".dvc-storage")
    (True, True)
    """
    from configobj import ConfigObj

    path = repo / CONFIG
    if not path.is_file():
        return None
    config = ConfigObj(str(path))
    name = config.get("core", {}).get("remote")
    if not name:
        return None
    url = str(config.get(f'remote "{name}"', {}).get("url", ""))
    if not url:
        return None
    resolved = url
    if "://" not in url:
        resolved = str(((repo / ".dvc") / url).resolve()) if not Path(url).is_absolute() else url
    return Remote(name=name, url=url, resolved=resolved)


def consumer_commands(repo: Path, tag: str, out: str = "data/build") -> list[str]:
    """Shell commands that get release ``tag`` of ``repo`` from elsewhere on this machine: a
    clone + ``dvc pull``, and ``dvc get`` / ``dvc import`` of the tables and VerSe stores.

    With a clone-relative folder remote, each command names the producer's folder (the clone's
    own copy of the setting would point into the clone).
    """
    remote = default_remote(repo)
    repo_path = str(repo.resolve())
    override = remote is not None and remote.clone_relative
    extra = f" --remote-config url={remote.resolved}" if override and remote else ""
    commands = [f"git clone {repo_path} verse-etl && cd verse-etl && git checkout {tag}"]
    if override and remote:
        commands.append(f"dvc remote modify --local {remote.name} url {remote.resolved}")
    commands += [
        "dvc pull",
        "cd ..",
        f"dvc get {repo_path} {out}/tables --rev {tag} -o tables{extra}",
        f"dvc get {repo_path} {out}/volumes/verse --rev {tag} -o volumes/verse{extra}",
        "mkdir project && cd project && git init -q && dvc init -q",
        f"dvc import {repo_path} {out}/tables --rev {tag} -o tables{extra}",
    ]
    return commands


def reachability_note(repo: Path) -> str:
    """One paragraph on who can pull from ``repo``'s default remote, for release notes."""
    remote = default_remote(repo)
    if remote is None:
        return (
            "This repository has no default DVC remote: consumers cannot pull the data. Add one "
            "(`dvc remote add -d team s3://bucket/verse-etl`), commit it and `dvc push`."
        )
    if remote.is_folder:
        where = "clone-relative folder" if remote.clone_relative else "folder"
        return (
            f"The default remote `{remote.name}` is a {where} on this machine ({remote.resolved}): "
            "clones elsewhere on this machine get the data with the commands below; other "
            "machines need a remote they can reach (`dvc remote add -d team s3://bucket/verse-etl`, "
            "commit, `dvc push -r team`)."
        )
    return (
        f"The default remote `{remote.name}` is {remote.url}: any machine with its credentials "
        "gets the data with `git clone`, `git checkout <tag>` and `dvc pull`."
    )
