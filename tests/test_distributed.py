"""Training under 2 CPU processes (torchrun, gloo DDP through accelerate) equals one process on the same batches."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

DDP_CHECK = Path(__file__).with_name("ddp_check.py")  # the script each process runs
SETTINGS = {"max_steps": 4, "epochs": 10, "batch_size": 4, "grad_accum": 2, "eval_every": 2, "dtype": "float32",
            "val_limit": None, "threads": 1, "log_every": 1}


def run(tmp: Path, model: Path, data: Path, processes: int) -> Path:
    out = tmp / f"p{processes}"
    command = [sys.executable, str(DDP_CHECK), str(out), str(model), f"jsonl:{data}", json.dumps(SETTINGS)]
    if processes > 1:
        torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
        command = [torchrun, "--standalone", f"--nproc_per_node={processes}", *command[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_two_processes_match_one_on_the_same_global_batch(tiny_causal_dir, memo, tmp_path):
    data = memo
    single = run(tmp_path, tiny_causal_dir, data, 1)
    double = run(tmp_path, tiny_causal_dir, data, 2)

    one = torch.load(single / "rank0.pt")
    ranks = [torch.load(double / f"rank{r}.pt") for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    # both ranks end with identical weights
    assert ranks[0]["weights"].keys() == ranks[1]["weights"].keys() == one["weights"].keys()
    for name, tensor in ranks[0]["weights"].items():
        assert torch.equal(tensor, ranks[1]["weights"][name]), name
        assert torch.allclose(tensor, one["weights"][name], atol=1e-5), name
    # the same losses as one process: training (logged by rank 0, reduced over ranks) and validation
    logs = [[json.loads(line) for line in (d / "run" / "train_log.jsonl").read_text().splitlines()]
            for d in (single, double)]
    train_losses = [[r["loss"] for r in log if "loss" in r] for log in logs]
    assert train_losses[0] == pytest.approx(train_losses[1], abs=1e-4)
    assert [v for _, v in ranks[0]["val_losses"]] == pytest.approx([v for _, v in one["val_losses"]], abs=1e-5)
    assert ranks[0]["tokens_seen"] == one["tokens_seen"]  # every example seen once, split over the ranks
    costs = json.loads((double / "run" / "costs.json").read_text())
    assert costs["processes"] == 2
