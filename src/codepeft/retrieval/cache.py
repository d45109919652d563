"""On-disk cache of retrieval indexes under ``$CODEPEFT_HOME/indexes/``.

An index is keyed by the checksum of the texts it indexes, the retriever and the model (tokenizer
settings for BM25, embedding model for dense), so a changed data set or model never reuses a stale
index. Builds are written to a temporary folder and renamed into place under a file lock, so
concurrent runs and killed builds never leave a half-written index behind.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from filelock import FileLock

from codepeft.home import codepeft_home
from codepeft.provenance import sha256_json
from codepeft.rundir import replacing

T = TypeVar("T")


def texts_checksum(texts: Sequence[str]) -> str:
    """sha256 of the indexed texts in order (row ``i`` of an index is ``texts[i]``)."""
    return sha256_json(list(texts))


def index_dir(retriever: str, model_key: str, checksum: str) -> Path:
    """The cache folder of one (data, retriever, model) index."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_key).strip("_")[:80]
    return codepeft_home() / "indexes" / f"{retriever}-{slug}-{checksum[:20]}"


def cached(directory: Path, build: Callable[[Path], None], load: Callable[[Path], T]) -> T:
    """Load the index in ``directory``, building it first (atomically) when it is missing."""
    done = directory / "COMPLETE"
    if not done.exists():
        directory.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(directory) + ".lock"):
            if not done.exists():
                with replacing(directory) as staging:  # replaces an interrupted older build without COMPLETE
                    staging.mkdir()
                    build(staging)
                    (staging / "COMPLETE").write_text("ok\n")
    return load(directory)
