"""Which modules an adapter attaches to, discovered from the model itself.

Every ``nn.Linear`` (and GPT-2 style ``Conv1D``) is classified by role from where it sits (inside an
attention block or a feed-forward block) and what it is called, with shapes breaking ties (a
feed-forward module whose input is wider than its output is the down projection IA3 scales). No
table of model names is needed; names are returned as the shortest unambiguous suffixes, which is
how peft matches ``target_modules``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

_ATTENTION_BLOCK = re.compile(r"attn|attention", re.IGNORECASE)
_MLP_BLOCK = re.compile(r"mlp|ffn|feed_?forward|densereludense|^fc$|intermediate|moe|expert", re.IGNORECASE)
_HEAD = re.compile(r"^(lm_head|embed_out|output|score|classifier|head|lm_logits|proj_out)$")
_ROLE_PATTERNS = {
    "qkv": re.compile(r"^(c_attn|qkv|qkv_proj|wqkv|query_key_value|in_proj)$", re.IGNORECASE),
    "q": re.compile(r"^(q|q_proj|query|wq|q_lin)$", re.IGNORECASE),
    "k": re.compile(r"^(k|k_proj|key|wk|k_lin)$", re.IGNORECASE),
    "v": re.compile(r"^(v|v_proj|value|wv|v_lin)$", re.IGNORECASE),
    "o": re.compile(r"^(o|o_proj|out_proj|dense|wo|c_proj|out_lin|proj)$", re.IGNORECASE),
}
_MLP_NAMES = re.compile(r"^(gate_proj|up_proj|down_proj|c_fc|fc1|fc2|wi|wi_0|wi_1|wo|w1|w2|w3|dense_h_to_4h|"
                        r"dense_4h_to_h|gate_up_proj)$", re.IGNORECASE)
_DOWN_NAMES = re.compile(r"^(down_proj|fc2|wo|w2|dense_4h_to_h)$", re.IGNORECASE)


@dataclass
class TargetModules:
    """Adapter targets by role, as peft ``target_modules`` suffixes.

    ``attention`` is every attention projection (``attention_roles`` splits it into q/k/v/o/qkv),
    ``mlp`` every feed-forward projection, ``feedforward`` the feed-forward modules IA3 scales on
    their input, ``ia3`` IA3's usual targets (keys, values, feed-forward), ``all_linear`` every
    linear layer except ``excluded`` (output heads).
    """

    attention: list[str] = field(default_factory=list)
    attention_roles: dict[str, list[str]] = field(default_factory=dict)
    mlp: list[str] = field(default_factory=list)
    feedforward: list[str] = field(default_factory=list)
    ia3: list[str] = field(default_factory=list)
    all_linear: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _linear_shape(module: Any) -> tuple[int, int] | None:
    """(in, out) features of a linear-like module, or None if it is not one."""
    import torch.nn as nn

    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers always has it
        Conv1D = ()
    if Conv1D and isinstance(module, Conv1D):
        weight = module.weight
        return int(weight.shape[0]), int(weight.shape[1])  # Conv1D stores (in, out)
    return None


def _vocab_size(model: Any) -> int | None:
    config = getattr(model, "config", None)
    getter = getattr(config, "get_text_config", None)
    text_config = getter() if callable(getter) else config
    return getattr(text_config, "vocab_size", None)


def _block(parents: list[str]) -> str | None:
    """``attention`` or ``mlp`` from the nearest enclosing block that says which it is."""
    for parent in reversed(parents):
        if _ATTENTION_BLOCK.search(parent):
            return "attention"
        if _MLP_BLOCK.search(parent):
            return "mlp"
    return None


def _classify(name: str, shape: tuple[int, int], vocab: int | None) -> tuple[str, str | None]:
    """(group, role) of one linear module: group is attention, mlp, other or excluded."""
    parts = name.split(".")
    leaf, parents = parts[-1], parts[:-1]
    if (_HEAD.match(leaf) and not parents) or (vocab and shape[1] == vocab and _block(parents) is None):
        return "excluded", None
    if leaf in {"lm_head", "embed_out"}:
        return "excluded", None
    block = _block(parents)
    if block is None:
        if any(p.match(leaf) for p in _ROLE_PATTERNS.values()) and not _MLP_NAMES.match(leaf):
            block = "attention"
        elif _MLP_NAMES.match(leaf):
            block = "mlp"
    if block == "attention":
        role = next((r for r, p in _ROLE_PATTERNS.items() if p.match(leaf)), None)
        return "attention", role
    if block == "mlp":
        down = shape[0] > shape[1] or bool(_DOWN_NAMES.match(leaf) and shape[0] >= shape[1])
        return "mlp", "down" if down else "up"
    return "other", None


def _suffixes(selected: list[str], all_names: list[str]) -> list[str]:
    """Shortest name suffixes that match every module in ``selected`` and no other linear module."""
    chosen: set[str] = set()
    others = set(all_names) - set(selected)
    for name in selected:
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            suffix = ".".join(parts[-depth:])
            # peft matches a target as the whole name or a ``.``-separated suffix of it
            clash = any(o == suffix or o.endswith("." + suffix) for o in others)
            if not clash:
                chosen.add(suffix)
                break
    return sorted(chosen)


def find_target_modules(model: Any) -> TargetModules:
    """Classify every linear layer of ``model`` by role and return the adapter targets."""
    vocab = _vocab_size(model)
    names: list[str] = []
    groups: dict[str, list[str]] = defaultdict(list)
    roles: dict[str, list[str]] = defaultdict(list)
    for name, module in model.named_modules():
        shape = _linear_shape(module)
        if shape is None or not name:
            continue
        names.append(name)
        group, role = _classify(name, shape, vocab)
        groups[group].append(name)
        if role:
            roles[f"{group}:{role}"].append(name)

    def suffix(selected: list[str]) -> list[str]:
        return _suffixes(selected, names)

    attention_roles = {
        role.split(":", 1)[1]: suffix(members) for role, members in roles.items() if role.startswith("attention:")
    }
    feedforward = roles.get("mlp:down", [])
    kv = roles.get("attention:k", []) + roles.get("attention:v", []) + roles.get("attention:qkv", [])
    return TargetModules(
        attention=suffix(groups["attention"]),
        attention_roles=dict(sorted(attention_roles.items())),
        mlp=suffix(groups["mlp"]),
        feedforward=suffix(feedforward),
        ia3=suffix(kv + feedforward),
        all_linear=suffix(groups["attention"] + groups["mlp"] + groups["other"]),
        excluded=suffix(groups["excluded"]) if groups["excluded"] else [],
    )
