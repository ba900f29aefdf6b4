"""
``get``'s plan: which local path each remote name is saved under, worked
out before anything is fetched, so that two names that would land on the
same file are refused up front.  Names that come from the server (``get
-r``) are hostile until checked: one segment, clean text, never ``.`` or
``..`` (L{isSafeEntryName}).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from echofile.client.sinks import SaveError
from echofile.text import isClean


class PlanError(Exception):
    """The names asked for cannot all be saved as asked (a usage error: nothing was fetched)."""


def segments(name: str) -> list[str]:
    """A remote path's segments (both ``/`` and ``\\`` separate; empty ones and ``.`` dropped)."""
    return [part for part in name.replace("\\", "/").split("/") if part not in ("", ".")]


def baseName(name: str) -> str:
    """The name a remote path is saved under: its last segment."""
    base = PurePosixPath(name.replace("\\", "/")).name
    if base in ("", ".", ".."):
        raise SaveError(f"{name}: no file name to save it under")
    return base


def keptPath(name: str) -> PurePosixPath:
    """C{name} with its folders (``--parents``), never leaving the output folder."""
    parts = segments(name)
    if not parts or ".." in parts:
        raise SaveError(f"{name}: cannot be saved with its folders inside the output folder")
    return PurePosixPath(*parts)


def isSafeEntryName(name: str) -> bool:
    """May a name the server listed become a local file or folder name?"""
    return name not in ("", ".", "..") and "/" not in name and "\\" not in name and isClean(name)


@dataclass
class Target:
    """One remote file and where it goes (C{local} relative to the output folder)."""

    name: str
    local: PurePosixPath


def plan(names: list[str], parents: bool) -> tuple[list[Target], list[tuple[str, str]]]:
    """
    Where each name is saved, and the names that cannot be saved at all
    (with why).  Two names on one local path are a L{PlanError}.
    """
    targets: list[Target] = []
    bad: list[tuple[str, str]] = []
    seen: dict[PurePosixPath, str] = {}
    for name in names:
        try:
            local = keptPath(name) if parents else PurePosixPath(baseName(name))
        except SaveError as e:
            bad.append((name, str(e)))
            continue
        if local in seen:
            hint = "" if parents else " (use --parents to keep their folders)"
            raise PlanError(f"{seen[local]} and {name} would both be saved as {local}{hint}")
        seen[local] = name
        targets.append(Target(name, local))
    return targets, bad
