from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import build_tokenizer, save_tiny, write_memorisable

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real data sets (``../shared/data`` or ``$CODEPEFT_DATA_DIR``)."""
    path = Path(os.environ.get("CODEPEFT_DATA_DIR") or REPO.parent / "shared" / "data")
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}: set CODEPEFT_DATA_DIR")
    return path


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets a private CODEPEFT_HOME unless it uses the real model cache."""
    if "CODEPEFT_TEST_REAL_HOME" not in os.environ:
        monkeypatch.setenv("CODEPEFT_HOME", str(tmp_path_factory.getbasetemp() / "codepeft-home"))
    # Tiny models run fastest on one thread; spinning a second one only fights other processes.
    if "CODEPEFT_THREADS" not in os.environ:
        monkeypatch.setenv("CODEPEFT_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_causal_dir(tmp_path_factory) -> Path:
    """A tiny random Llama with a chat-template tokenizer, saved as a local model directory."""
    return save_tiny(tmp_path_factory.mktemp("tiny-causal"), "causal", chat=True)


@pytest.fixture(scope="session")
def tiny_wide_causal_dir(tmp_path_factory) -> Path:
    """A tiny Llama 64 wide (bitsandbytes' CPU 4-bit kernels need widths divisible by 64) whose weights start
    larger than the default 0.02: with tiny random embeddings the logits cannot move far unless the embeddings
    themselves are trained, so only full fine-tuning could show it memorises."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(chat=True)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                         tie_word_embeddings=True, initializer_range=0.2)
    directory = tmp_path_factory.mktemp("tiny-wide")
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory) -> Path:
    """A tiny random Llama without a chat template (instruction-style prompts)."""
    return save_tiny(tmp_path_factory.mktemp("tiny-base"), "causal", chat=False)


@pytest.fixture(scope="session")
def tiny_seq2seq_dir(tmp_path_factory) -> Path:
    """A tiny random T5 saved as a local model directory."""
    return save_tiny(tmp_path_factory.mktemp("tiny-t5"), "seq2seq", chat=False)


@pytest.fixture(scope="session")
def real_home() -> Path:
    """A persistent CODEPEFT_HOME for slow tests so the converted smollm2 is reused across runs."""
    path = Path(os.environ.get("CODEPEFT_SLOW_HOME") or REPO / ".venv" / "codepeft-home")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def memo(tmp_path_factory) -> Path:
    """The memorisable JSONL data set of ``tiny.write_memorisable`` (read-only, shared by the session)."""
    return write_memorisable(tmp_path_factory.mktemp("memo") / "memo.jsonl")
