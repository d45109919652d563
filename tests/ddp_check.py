"""Check that training under several processes matches one process: run this under ``torchrun``.

Each rank trains (LoRA, no dropout) and writes ``rank<N>.pt`` with its final trainable weights into
the output directory, beside the run's ``train_log.jsonl``; the test compares the ranks with each
other and with a one-process run on the same global batches::

    torchrun --nproc_per_node 2 tests/ddp_check.py OUT MODEL DATA '{"max_steps": 4}'
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    import torch

    from codepeft.training import TrainSettings, train
    from codepeft.training.checkpoints import trainable_state

    out, model, data, settings = (argv or sys.argv[1:])[:4]
    result = train(model, [data], "lora", {"dropout": 0.0, "r": 4, "lr": 1e-2}, Path(out) / "run",
                   TrainSettings(**json.loads(settings)))
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    torch.save({"weights": trainable_state(result.model), "val_losses": result.val_losses, "world": world,
                "tokens_seen": result.costs["tokens_seen"]}, Path(out) / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
