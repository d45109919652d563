"""What a prompt-tuning model feeds its base for each prompt: the virtual tokens, then the prompt's
token embeddings. Both engines decode from these (transformers as padded ``inputs_embeds``, vLLM as
prompt embeddings), so each prompt sees the same inputs whatever the batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PromptEmbedder:
    """What a prompt-tuning model feeds its base for a prompt: ``virtual`` (the learned virtual-token
    embeddings, ``(num_virtual_tokens, hidden)``) then ``word_embeddings`` of the prompt's token ids."""

    virtual: Any
    word_embeddings: Any

    def __call__(self, ids: list[int]) -> Any:
        import torch

        with torch.inference_mode():
            tokens = self.word_embeddings(torch.tensor(ids, dtype=torch.long, device=self.virtual.device))
            # peft casts the virtual tokens to the input embeddings' dtype before concatenating them
            return torch.cat((self.virtual.to(tokens.dtype), tokens)).cpu().contiguous()


def prompt_embedder(model: Any) -> PromptEmbedder:
    """The embedder of a prompt-tuning ``PeftModel`` (or the one kept by ``without_weights``)."""
    kept = getattr(model, "prompt_embedder", None)
    if isinstance(kept, PromptEmbedder):
        return kept
    import torch

    with torch.inference_mode():
        virtual = model.get_prompt(batch_size=1)[0].detach().clone()  # as peft's generate takes them
    return PromptEmbedder(virtual, model.word_embeddings)
