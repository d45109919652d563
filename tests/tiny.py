"""Tiny randomly initialised models and a tokenizer built here, so unit tests need no download."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "import os\nprint(os.listdir('.'))\n",
    "x = [i * 2 for i in range(10) if i < 5 or i > 7]\n",
    "### Instruction:\nsort a list\n\n### Response:\nsorted(lst)\n",
    "```python\nre.findall('<[^>]+>|\\|', s)\n```",
    "convert a string to an integer int(s) reverse a list lst[::-1] open file read json",
] * 4


def build_tokenizer(chat: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a few lines of code (any text round-trips)."""
    specials = ["<pad>", "<eos>", "<bos>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<|im_end|>" if chat else "<eos>", bos_token="<bos>"
    )
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def build_causal(tokenizer: PreTrainedTokenizerFast, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


def build_seq2seq(tokenizer: PreTrainedTokenizerFast, seed: int = 0):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
        num_heads=4, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5ForConditionalGeneration(config).eval()


def save_tiny(directory: Path, kind: str = "causal", chat: bool = True) -> Path:
    """Write a tiny model + tokenizer to ``directory`` (loadable as a local model spec)."""
    tokenizer = build_tokenizer(chat=chat and kind == "causal")
    model = build_causal(tokenizer) if kind == "causal" else build_seq2seq(tokenizer)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


MEMO_INTENTS = ["add two numbers", "reverse a list", "read a json file", "sort a list"]
MEMO_CODES = ["a + b", "lst[::-1]", "json.load(open(path))", "sorted(lst)"]


def write_memorisable(path: Path) -> Path:
    """A JSONL data set of 4 short intent -> code pairs (8 train rows, 4 validation) a tiny model can memorise."""
    rows = [{"id": f"t{i}", "intent": MEMO_INTENTS[i % 4], "code": MEMO_CODES[i % 4], "split": "train"}
            for i in range(8)]
    rows += [{"id": f"v{i}", "intent": MEMO_INTENTS[i], "code": MEMO_CODES[i], "split": "validation"}
             for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
