"""``codealpacapy``: the Python subset of CodeAlpaca, with a documented filter and a seeded split.

The reference study used ``antolin/codealpaca-filtered`` (hub) but did not publish its filter, so
locally this task applies its own rule (``is_python_example``) to the official CodeAlpaca file and
splits the kept records 80/10/10 with a seeded shuffle. From the hub it reads the reference study's
already-filtered splits unchanged (``valid`` is renamed ``validation``).
"""

from __future__ import annotations

import ast
import random
import re
import textwrap
import warnings
from pathlib import Path
from typing import Any, ClassVar

from codepeft.data.base import Example, register_task
from codepeft.data.hub import CachedTask, load_hub_rows, read_records, require_fields
from codepeft.errors import CodepeftError

DEFAULT_FILE = "codealpaca/code_alpaca_2k.json"
DEFAULT_SEED = 42
#: Shares of the kept records; the test share is what remains.
TRAIN_SHARE, VALIDATION_SHARE = 0.8, 0.1

#: Another language named in the instruction or input means the answer is not meant to be Python.
OTHER_LANGUAGE = re.compile(
    r"\b(java|javascript|js|typescript|node\.?js|react|jquery|angular|vue|sql|mysql|postgres(?:ql)?|"
    r"sqlite|mongodb|php|ruby|rails|perl|swift|kotlin|scala|rust|golang|haskell|matlab|bash|powershell|"
    r"objective-c|dart|lua|julia|r program|c program|in c|assembly)\b"
    r"|c\+\+|c#|\.net",
    re.IGNORECASE,
)
PYTHON = re.compile(r"\bpython\b", re.IGNORECASE)


def _is_bare_value(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant | ast.Name | ast.Tuple | ast.List)


def is_python_example(instruction: str, input_text: str, output: str) -> bool:
    """The Python filter: keep a record when all three hold.

    1. The instruction and input name no other language (``OTHER_LANGUAGE``), or they also name Python
       ("Rewrite this SQL query in Python").
    2. The output parses as Python (``ast.parse`` after dedenting).
    3. The output is code, not a bare value: some statement is more than a lone constant, name,
       tuple or list (prose like ``Hello`` or ``5`` parses but is an answer, not a program).
    """
    request = f"{instruction}\n{input_text}"
    if OTHER_LANGUAGE.search(request) and not PYTHON.search(request):
        return False
    code = textwrap.dedent(output).strip()
    if not code:
        return False
    try:
        with warnings.catch_warnings():  # invalid escapes in scraped code are not our concern
            warnings.simplefilter("ignore")
            tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return any(not _is_bare_value(stmt) for stmt in tree.body)


def split_indices(count: int, seed: int) -> dict[str, list[int]]:
    """Seeded 80/10/10 split of ``range(count)`` (each list sorted, so file order is kept)."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    n_train = round(count * TRAIN_SHARE)
    n_val = round(count * VALIDATION_SHARE)
    return {"train": sorted(order[:n_train]), "validation": sorted(order[n_train:n_train + n_val]),
            "test": sorted(order[n_train + n_val:])}


def _intent(instruction: str, input_text: str) -> str:
    instruction, input_text = instruction.strip(), (input_text or "").strip()
    return f"{instruction}\n{input_text}" if input_text else instruction


@register_task
class CodeAlpacaPyTask(CachedTask):
    name = "codealpacapy"
    description = "CodeAlpaca, Python subset (documented filter, seeded 80/10/10 split)"
    splits = ("train", "validation", "test")
    hub_id = "antolin/codealpaca-filtered"
    options_help: ClassVar[dict[str, str]] = {
        "path": f"CodeAlpaca JSON/JSONL file (default: {DEFAULT_FILE} under --data-dir), e.g. the 20k file",
        "seed": f"seed of the train/validation/test shuffle (default {DEFAULT_SEED})",
    }

    def __init__(self, data_dir: Path | None = None, **options: Any) -> None:
        super().__init__(data_dir, **options)
        try:
            self.seed = int(options.get("seed", DEFAULT_SEED))
        except (TypeError, ValueError) as err:
            raise CodepeftError(f"option seed={options['seed']!r} of codealpacapy is not an integer: "
                                "pass seed=N") from err
        self._kept: list[Example] | None = None

    def source_dir(self) -> Path | None:
        if "path" in self.options:
            return Path(".")  # an explicit file never falls back to the hub
        return super().source_dir()

    def load_local(self, split: str, data_dir: Path) -> list[Example]:
        kept = self.python_subset(data_dir)
        return [kept[i] for i in split_indices(len(kept), self.seed)[split]]

    def python_subset(self, data_dir: Path) -> list[Example]:
        """Every record of the file that passes ``is_python_example``, in file order."""
        if self._kept is None:
            path = Path(self.options["path"]).expanduser() if "path" in self.options else \
                self.local_path(data_dir, DEFAULT_FILE)
            rows = read_records(path)
            require_fields(rows, ("instruction", "output"), str(path),
                           "use a CodeAlpaca file (fields instruction, input, output)")
            self._kept = [
                Example(id=f"codealpaca-{index}", intent=_intent(r["instruction"], r.get("input") or ""),
                        reference=textwrap.dedent(r["output"]).strip(), meta={"row": index})
                for index, r in enumerate(rows)
                if is_python_example(r["instruction"] or "", r.get("input") or "", r["output"] or "")
            ]
        return self._kept

    def load_hub(self, split: str) -> list[Example]:
        hub_split = "valid" if split == "validation" else split
        rows = load_hub_rows(self.hub_id, hub_split)
        require_fields(rows, ("instruction", "output"), f"{self.hub_id} ({hub_split})",
                       "the hub data set changed its fields; pass --data-dir DIR instead")
        return [
            Example(id=f"codealpaca-{split}-{index}", intent=_intent(r["instruction"], r.get("input") or ""),
                    reference=(r["output"] or "").strip(), meta={"row": index})
            for index, r in enumerate(rows)
        ]
