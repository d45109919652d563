"""CoNaLa: one-line Python snippets from Stack Overflow intents.

- ``conala``: the DocPrompting re-split used by the reference study (2,135 / 201 / 543; fields
  ``nl``, ``cmd``; hub id ``neulab/docprompting-conala``).
- ``conala-curated``: the original CoNaLa v1.1 curated split (2,379 / 500; ``rewritten_intent``,
  falling back to ``intent`` when null; hub id ``neulab/conala``, config ``curated``).
No tests: scored by exact match and CodeBLEU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codepeft.data.base import Example, register_task
from codepeft.data.hub import CachedTask, load_hub_rows, read_json_list, require_fields, unique_ids

_DOCPROMPTING_FILES = {"train": "train", "validation": "dev", "test": "test"}


@register_task
class ConalaTask(CachedTask):
    name = "conala"
    description = "CoNaLa, DocPrompting split of the reference study (intent -> one-line Python)"
    splits = ("train", "validation", "test")
    hub_id = "neulab/docprompting-conala"

    def load_local(self, split: str, data_dir: Path) -> list[Example]:
        relative = f"conala/docprompting/cmd_{_DOCPROMPTING_FILES[split]}.oracle_man.full.json"
        rows = read_json_list(self.local_path(data_dir, relative))
        return self._examples(rows, str(data_dir / relative))

    def load_hub(self, split: str) -> list[Example]:
        return self._examples(load_hub_rows(self.hub_id, split), f"{self.hub_id} ({split})")

    def _examples(self, rows: list[dict[str, Any]], source: str) -> list[Example]:
        require_fields(rows, ("nl", "cmd"), source, "use the DocPrompting CoNaLa files (fields nl, cmd)")
        # The reference study drops records without an intent or a snippet; the shipped files have none.
        rows = [r for r in rows if r["nl"] and r["cmd"]]
        ids = unique_ids(r.get("question_id", i) for i, r in enumerate(rows))
        return [
            Example(id=ex_id, intent=r["nl"].strip(), reference=r["cmd"].strip(),
                    meta={"question_id": r.get("question_id")})
            for ex_id, r in zip(ids, rows, strict=True)
        ]


@register_task
class ConalaCuratedTask(CachedTask):
    name = "conala-curated"
    description = "CoNaLa v1.1 curated, original split (rewritten intent -> one-line Python)"
    splits = ("train", "test")
    hub_id = "neulab/conala"

    def load_local(self, split: str, data_dir: Path) -> list[Example]:
        relative = f"conala/conala-{split}.json"
        rows = read_json_list(self.local_path(data_dir, relative))
        return self._examples(rows, str(data_dir / relative))

    def load_hub(self, split: str) -> list[Example]:
        return self._examples(load_hub_rows(self.hub_id, split, config="curated"), f"{self.hub_id} ({split})")

    def _examples(self, rows: list[dict[str, Any]], source: str) -> list[Example]:
        require_fields(rows, ("intent", "snippet"), source, "use the CoNaLa v1.1 files (fields intent, snippet)")
        ids = unique_ids(r.get("question_id", i) for i, r in enumerate(rows))
        return [
            Example(id=ex_id, intent=(r.get("rewritten_intent") or r["intent"] or "").strip(),
                    reference=(r["snippet"] or "").strip(),
                    meta={"question_id": r.get("question_id"), "original_intent": r["intent"]})
            for ex_id, r in zip(ids, rows, strict=True)
        ]
