"""Resolving a mining target (folder, file, git checkout, installed module, ``stdlib``) to Python files.

Nothing is imported: installed modules are located with ``importlib.util.find_spec`` on their
top-level name, which reads the import system's finders but never executes the package.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import subprocess
import sysconfig
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from codepeft.errors import CodepeftError

LICENSE_NAMES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENSE.rst", "LICENCE", "LICENCE.txt",
                 "LICENCE.md", "COPYING", "COPYING.txt", "COPYING.md")
# Folders that never hold the project's own source: caches, environments, vendored trees.
SKIPPED_DIRS = {"__pycache__", "site-packages", "dist-packages", "node_modules", "build", "dist"}
STDLIB_EXCLUDED = {"site-packages", "dist-packages", "test", "tests", "idlelib", "turtledemo", "lib2to3"}


@dataclass
class SourceSet:
    """The Python files of a target, the root module names are relative to, and its licence file."""

    target: str
    kind: str  # "folder" | "file" | "git" | "module" | "stdlib"
    root: Path
    files: list[Path]
    license: str | None
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> files skipped while walking


def resolve_target(target: str, include_tests: bool = False) -> SourceSet:
    """Find the Python files of ``target`` (an existing path, ``stdlib``, or an importable module name)."""
    path = Path(target).expanduser()
    if os.path.lexists(path) and not path.exists():
        raise CodepeftError(f"{target!r} is a broken symlink or a symlink loop: point codepeft mine at a real "
                            "folder, file or module name")
    if path.exists():
        return _resolve_path(target, path)
    if target == "stdlib":
        return _resolve_stdlib(include_tests)
    if _looks_like_module(target):
        module = _resolve_module(target)
        if module is not None:
            return module
    raise CodepeftError(f"{target!r} is neither an existing path nor an installed Python module: give a folder, "
                        "a .py file, a git checkout, an importable module name (e.g. json) or 'stdlib'")


def _looks_like_module(target: str) -> bool:
    return all(part.isidentifier() for part in target.split("."))


def _resolve_path(target: str, path: Path) -> SourceSet:
    path = path.resolve()
    if path.is_file():
        if path.suffix != ".py":
            raise CodepeftError(f"{target!r} is not a Python file: give a .py file or a folder of them")
        return SourceSet(target, "file", path.parent, [path], find_license(path.parent))
    tracked = _git_tracked(path)
    if tracked is not None:
        return SourceSet(target, "git", path, tracked, find_license(path))
    files, skipped = walk_python_files(path)
    return SourceSet(target, "folder", path, files, find_license(path), skipped)


def _git_tracked(folder: Path) -> list[Path] | None:
    """Tracked ``.py`` files when ``folder`` is inside a git work tree, else ``None``."""
    if not any((parent / ".git").exists() for parent in (folder, *folder.parents)):
        return None
    try:
        result = subprocess.run(["git", "-C", str(folder), "ls-files", "-z", "--", "*.py"],
                                capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    names = [name for name in result.stdout.decode("utf-8", "surrogateescape").split("\0") if name]
    files = [folder / name for name in names]
    return sorted(f for f in files if f.is_file())


def walk_python_files(root: Path, excluded: set[str] = SKIPPED_DIRS) -> tuple[list[Path], Counter[str]]:
    """Every ``.py`` file under ``root``, following symlinks once: a folder reached twice is a loop, counted."""
    skipped: Counter[str] = Counter()
    files: list[Path] = []
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            info = folder.stat()
        except OSError:
            skipped["unreadable_or_symlink_loop"] += 1
            continue
        key = (info.st_dev, info.st_ino)
        if key in seen:
            skipped["symlink_loop"] += 1
            continue
        seen.add(key)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            skipped["unreadable"] += 1
            continue
        for entry in entries:
            try:
                is_dir = entry.is_dir()
                is_file = entry.is_file()
            except OSError:
                skipped["unreadable_or_symlink_loop"] += 1
                continue
            if is_dir:
                if entry.name.startswith(".") or entry.name in excluded or (Path(entry.path) / "pyvenv.cfg").exists():
                    continue
                stack.append(Path(entry.path))
            elif is_file and entry.name.endswith(".py"):
                files.append(Path(entry.path))
            elif entry.name.endswith(".py") and entry.is_symlink():
                skipped["unreadable_or_symlink_loop"] += 1
    return sorted(files), skipped


def _resolve_stdlib(include_tests: bool) -> SourceSet:
    root = Path(sysconfig.get_paths()["stdlib"]).resolve()
    excluded = SKIPPED_DIRS | (STDLIB_EXCLUDED - ({"test", "tests"} if include_tests else set()))
    files, skipped = walk_python_files(root, excluded)
    return SourceSet("stdlib", "stdlib", root, files, find_license(root), skipped)


def _resolve_module(name: str) -> SourceSet | None:
    top = name.split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        package_dir = Path(next(iter(spec.submodule_search_locations))).resolve()
        target_dir = package_dir.joinpath(*name.split(".")[1:])
        root = package_dir.parent
        if target_dir.is_dir():
            files, skipped = walk_python_files(target_dir)
        elif target_dir.with_suffix(".py").is_file():
            files, skipped = [target_dir.with_suffix(".py")], Counter()
        else:
            return None
    elif spec.origin and spec.origin.endswith(".py") and "." not in name:
        root = Path(spec.origin).resolve().parent
        files, skipped = [Path(spec.origin).resolve()], Counter()
    elif spec.origin in ("built-in", "frozen") or (spec.origin and spec.origin.endswith(
            tuple(importlib.machinery.EXTENSION_SUFFIXES))):
        raise CodepeftError(f"module {name!r} has no Python source (it is built in or compiled): "
                            "mine a pure-Python module or package instead")
    else:
        return None
    return SourceSet(name, "module", root, files, _module_license(top, root), skipped)


def _module_license(top: str, root: Path) -> str | None:
    """The licence file of the distribution that installs ``top``, else the nearest one above it."""
    from importlib import metadata

    try:
        for dist_name in metadata.packages_distributions().get(top, []):
            for file in metadata.distribution(dist_name).files or []:
                if Path(file.name).stem.upper() in {"LICENSE", "LICENCE", "COPYING"}:
                    return str(Path(file.locate()).resolve())
    except Exception:  # broken metadata must not stop mining; fall back to a file search
        pass
    return find_license(root)


def find_license(folder: Path, levels: int = 3) -> str | None:
    """The first licence file in ``folder`` or up to ``levels`` folders above it."""
    for candidate_dir in (folder, *list(folder.parents)[:levels]):
        for name in LICENSE_NAMES:
            candidate = candidate_dir / name
            if candidate.is_file():
                return str(candidate)
    return None
