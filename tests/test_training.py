"""Training behaviour beyond one method: packing, resume, joint data, costs, merge, the CLI and bad input."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch

from codepeft.cli import main
from codepeft.data import get_task
from codepeft.errors import CodepeftError
from codepeft.models import load_model
from codepeft.training import TrainSettings, train
from codepeft.training.data import collate, epoch_order, tokenize_all

FAST = {"max_steps": 4, "epochs": 10, "batch_size": 4, "eval_every": 2, "dtype": "float32", "val_limit": None}



def run_cli(args: list[str]) -> tuple[int, str, str]:
    """``codepeft ARGS`` as a user runs it: (exit code, stderr, stdout); a CodepeftError is exit 2, one line."""
    import contextlib
    import io

    from codepeft.cli.app import console, out

    err, stdout = io.StringIO(), io.StringIO()
    code = 0
    console.file, out.file = err, stdout
    try:
        with contextlib.redirect_stdout(stdout):
            main(args)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        console.file, out.file = None, None
    return code, err.getvalue(), stdout.getvalue()


def test_packed_rows_keep_examples_apart(tiny_causal_dir, memo):
    """A packed row scores every example exactly as if it were alone (block-diagonal attention)."""
    from codepeft.data import get_task
    from codepeft.models import load_model

    loaded = load_model(tiny_causal_dir, dtype="float32")
    task = get_task(f"jsonl:{memo}")
    items = tokenize_all(task, task.load("validation"), loaded, 512)
    pad = loaded.tokenizer.pad_token_id
    counts = [i.target_tokens(True) for i in items]
    with torch.no_grad():
        packed = float(loaded.model(**collate(items, "packed", True, pad, 512), use_cache=False).loss)
        alone = sum(float(loaded.model(**collate([i], "grouped", True, pad, 512)).loss) * n
                    for i, n in zip(items, counts, strict=True)) / sum(counts)
        padded = float(loaded.model(**collate(items, "fixed", True, pad, 64)).loss)
    assert packed == pytest.approx(alone, rel=1e-5)
    assert padded == pytest.approx(alone, rel=1e-5)


def test_packed_batch_over_several_rows_scores_each_example_alone(tiny_causal_dir, memo):
    """Rows of at most ``pack_row_tokens`` tokens, padded to the longest: every example keeps its own loss."""
    import torch.nn.functional as F

    from codepeft.data import get_task
    from codepeft.models import load_model
    from codepeft.training.data import pack_rows, processed_tokens

    loaded = load_model(tiny_causal_dir, dtype="float32")
    task = get_task(f"jsonl:{memo}")
    items = tokenize_all(task, task.load("validation"), loaded, 512)
    pad = loaded.tokenizer.pad_token_id
    budget = 2 * max(i.length for i in items)  # two examples or more a row, over several rows
    batch = collate(items, "packed", True, pad, 512, pack_row_tokens=budget)
    rows = pack_rows([i.length for i in items], budget)
    assert batch["input_ids"].shape[0] == len(rows) > 1
    assert any(len(row) > 1 for row in rows)  # some rows really hold several examples
    assert all(sum(items[i].length for i in row) <= budget for row in rows)
    assert sorted(i for row in rows for i in row) == list(range(len(items)))
    assert processed_tokens(batch) == batch["input_ids"].numel() > sum(i.length for i in items)  # row padding counts
    with torch.no_grad():
        logits = loaded.model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits
        for r, row in enumerate(rows):
            start = 0
            for index in row:
                item = items[index]
                span = logits[r, start : start + item.length - 1]
                targets = torch.tensor(item.labels[1:])
                packed = float(F.cross_entropy(span, targets, ignore_index=-100, reduction="sum"))
                alone = float(loaded.model(**collate([item], "grouped", True, pad, 512)).loss)
                assert packed == pytest.approx(alone * item.target_tokens(True), rel=1e-5)
                start += item.length
        whole = float(loaded.model(**batch, use_cache=False).loss)
        counts = [i.target_tokens(True) for i in items]
        alone_mean = sum(float(loaded.model(**collate([i], "grouped", True, pad, 512)).loss) * n
                         for i, n in zip(items, counts, strict=True)) / sum(counts)
    assert whole == pytest.approx(alone_mean, rel=1e-5)
    # an example over the budget gets a row of its own instead of failing
    assert len(pack_rows([30, 5, 5], 10)) == 2 and [0] in pack_rows([30, 5, 5], 10)


def test_prompt_tokens_are_masked(tiny_causal_dir, tiny_seq2seq_dir, memo):
    from codepeft.data import get_task
    from codepeft.data.prompts import build_prompt, build_target
    from codepeft.models import load_model

    task = get_task(f"jsonl:{memo}")
    example = task.load("train")[0]
    causal = load_model(tiny_causal_dir, dtype="float32")
    item = tokenize_all(task, [example], causal, 512)[0]
    target = [t for t in item.labels if t != -100]
    assert causal.tokenizer.decode(target) == build_target(task, example, causal.tokenizer, causal.style)
    assert item.labels[: item.labels.index(target[0])] == (-100,) * item.labels.index(target[0])
    prompt_ids = causal.tokenizer(build_prompt(task, example, causal.tokenizer, causal.style),
                                  add_special_tokens=False)["input_ids"]
    assert list(item.input_ids[: len(prompt_ids)]) == prompt_ids
    seq2seq = load_model(tiny_seq2seq_dir, dtype="float32")
    item = tokenize_all(task, [example], seq2seq, 512)[0]
    assert seq2seq.tokenizer.decode(item.labels, skip_special_tokens=True) == example.reference


def test_mixing_follows_weights():
    order = epoch_order([100, 100], [3.0, 1.0], seed=0, epoch=0)
    share = sum(1 for s, _ in order if s == 0) / len(order)
    assert 0.68 < share < 0.82
    assert order != epoch_order([100, 100], [3.0, 1.0], seed=0, epoch=1)
    assert order == epoch_order([100, 100], [3.0, 1.0], seed=0, epoch=0)


def test_joint_training_on_two_data_sets(tiny_causal_dir, memo, tmp_path):
    other = tmp_path / "other.jsonl"
    rows = [{"id": f"o{i}", "intent": f"print {i}", "code": f"print({i})", "split": s}
            for i, s in enumerate(["train"] * 6 + ["validation"] * 2)]
    other.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = train(str(tiny_causal_dir), [f"jsonl:{memo}:3", (f"jsonl:{other}", 1.0)], "lora", None,
                   tmp_path / "run", TrainSettings(**FAST))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"] == [[f"jsonl:{memo}", 3.0], [f"jsonl:{other}", 1.0]]
    assert config["finished"] is True
    meta = json.loads((result.adapter_dir / "codepeft_adapter.json").read_text())
    assert meta["data"] == config["data"] and meta["method"] == "lora"


def test_costs_log_and_provenance_are_written(tiny_causal_dir, memo, tmp_path):
    result = train(str(tiny_causal_dir), [f"jsonl:{memo}"], "lora", {"r": 2}, tmp_path / "run", TrainSettings(**FAST))
    costs = json.loads((tmp_path / "run" / "costs.json").read_text())
    for key in ("trainable_parameters", "total_parameters", "peak_rss_bytes", "wall_seconds", "tokens_seen",
                "tokens_per_second", "target_tokens"):
        assert costs[key] > 0, key
    assert costs["trainable_parameters"] < costs["total_parameters"]
    assert 0.0 <= costs["padding_fraction"] < 0.5  # packed rows pad only to the longest row
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "val_loss" in r] == [0, 2, 4]
    assert json.loads((tmp_path / "run" / "environment.json").read_text())["seed"] == 0
    assert result.steps == 4


def test_seeded_runs_repeat_and_a_killed_run_resumes_to_the_same_weights(tiny_causal_dir, memo, tmp_path,
                                                                        monkeypatch):
    from safetensors.torch import load_file

    import codepeft.training.loop as loop

    settings = TrainSettings(max_steps=6, epochs=10, batch_size=4, eval_every=2, dtype="float32", val_limit=None)
    whole = train(str(tiny_causal_dir), [f"jsonl:{memo}"], "lora", None, tmp_path / "whole", settings)
    again = train(str(tiny_causal_dir), [f"jsonl:{memo}"], "lora", None, tmp_path / "again", settings)
    assert again.val_losses == whole.val_losses

    real_save = loop.save_checkpoint

    def save_then_die(root, step, *args, **kwargs):
        path = real_save(root, step, *args, **kwargs)
        if step == 4:
            raise KeyboardInterrupt  # the process is killed right after the step-4 checkpoint
        return path

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(str(tiny_causal_dir), [f"jsonl:{memo}"], "lora", None, tmp_path / "killed", settings)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    resumed = train(str(tiny_causal_dir), [f"jsonl:{memo}"], "lora", None, tmp_path / "killed", settings)
    assert [s for s, _ in resumed.val_losses] == [s for s, _ in whole.val_losses]
    assert [v for _, v in resumed.val_losses] == pytest.approx([v for _, v in whole.val_losses])
    a = load_file(whole.adapter_dir / "adapter_model.safetensors")
    b = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    assert all(torch.allclose(a[k], b[k]) for k in a)


def test_early_stopping_keeps_the_best_adapter(tiny_causal_dir, memo, tmp_path):
    # a learning rate far too high makes validation worse after the first evaluation
    settings = TrainSettings(max_steps=20, epochs=10, batch_size=4, eval_every=1, dtype="float32", val_limit=None,
                             early_stopping_patience=2, max_grad_norm=None)
    result = train(str(tiny_causal_dir), [f"jsonl:{memo}"], "full", {"lr": 1.0}, tmp_path / "run", settings)
    losses = dict(result.val_losses)
    assert result.stopped_early and result.steps < 20
    assert result.best_val_loss == min(losses.values())
    meta = json.loads((result.adapter_dir / "codepeft_adapter.json").read_text())
    assert meta["step"] == result.best_step


def test_merge_gives_the_same_outputs_and_exports(tiny_causal_dir, memo, tmp_path):
    from codepeft.models import load_model

    result = train(str(tiny_causal_dir), [f"jsonl:{memo}"], "lora", {"lr": 1e-2}, tmp_path / "run",
                   TrainSettings(**FAST))
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    unmerged = load_model(tiny_causal_dir, dtype="float32", adapter=result.adapter_dir)
    merged = load_model(tiny_causal_dir, dtype="float32", adapter=result.adapter_dir, merge=True)
    base = load_model(tiny_causal_dir, dtype="float32")
    with torch.no_grad():
        expected = unmerged.model(input_ids=ids).logits
        assert torch.allclose(merged.model(input_ids=ids).logits, expected, atol=1e-5)
        assert not torch.allclose(base.model(input_ids=ids).logits, expected, atol=1e-5)
    assert not hasattr(merged.model, "peft_config")

    code, err, _ = run_cli(["merge", str(result.adapter_dir), "--output", str(tmp_path / "merged"),
                                   "--dtype", "float32"])
    assert code == 0, err
    exported = load_model(tmp_path / "merged", dtype="float32")
    with torch.no_grad():
        assert torch.allclose(exported.model(input_ids=ids).logits, expected, atol=1e-5)


def test_cli_train_and_methods(tiny_causal_dir, memo, tmp_path):
    code, err, out = run_cli(["train", "--model", str(tiny_causal_dir), "--dataset", f"jsonl:{memo}",
                                   "--method", "ia3", "--param", "lr=0.01", "--max-steps", "2", "--epochs", "10",
                                   "--eval-every", "1",
                                   "--batch-size", "4", "--dtype", "float32", "--output", str(tmp_path / "run")])
    assert code == 0, err
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").exists()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["params"]["lr"] == 0.01
    verdict = json.loads((tmp_path / "run" / "costs.json").read_text())["convergence"]
    assert ("converged: " if verdict["converged"] else "not converged: ") + verdict["reason"] in " ".join(err.split())
    code, err, _ = run_cli(["train", "--model", str(tiny_causal_dir), "--dataset", f"jsonl:{memo}", "--max-steps", "1",
                            "--batch-size", "4", "--dtype", "float32", "--set", "pack_row_tokens=48",
                            "--set", "fast_dropout=false", "--output", str(tmp_path / "set")])
    assert code == 0, err
    settings = json.loads((tmp_path / "set" / "config.json").read_text())["settings"]
    assert (settings["pack_row_tokens"], settings["fast_dropout"]) == (48, False)
    # a finished run is not overwritten by accident
    code, err, _ = run_cli(["train", "--model", str(tiny_causal_dir), "--dataset", f"jsonl:{memo}",
                                 "--method", "ia3", "--max-steps", "2", "--output", str(tmp_path / "run")])
    assert code == 2 and "finished training run" in err and "--force" in err

    code, err, out = run_cli(["methods", "--json"])
    assert code == 0
    listed = {row["name"]: row for row in json.loads(out)}
    for name in ("lora", "dora", "ia3", "prompt-tuning", "prefix-tuning", "qlora-4bit", "qlora-8bit", "full",
                 "zero-shot"):
        assert name in listed
    assert listed["lora"]["kind"] == "train" and listed["zero-shot"]["kind"] == "prompt"
    lora = listed["lora"]["defaults"]
    assert (lora["r"], lora["alpha"], lora["dropout"], lora["lr"]) == (16, 32, 0.05, 3e-4)
    assert listed["prompt-tuning"]["defaults"]["num_virtual_tokens"] == 20
    assert listed["prefix-tuning"]["defaults"]["num_virtual_tokens"] == 10
    assert (listed["ia3"]["defaults"]["lr"], listed["prefix-tuning"]["defaults"]["lr"],
            listed["full"]["defaults"]["lr"], listed["prompt-tuning"]["defaults"]["lr"]) == (3e-3, 3e-2, 5e-5, 3e-3)


@pytest.mark.parametrize(("extra", "message"), [
    (["--method", "lorax"], "unknown method 'lorax'"),
    (["--method", "lora", "--param", "r=0"], "method 'lora': r: Input should be greater than 0"),
    (["--method", "lora", "--param", "lr=-1"], "method 'lora': lr: Input should be greater than 0"),
    (["--method", "ia3", "--param", "lr=0"], "method 'ia3': lr: Input should be greater than 0"),
    (["--method", "lora", "--param", "rank=4"], "method 'lora': rank: Extra inputs are not permitted"),
    (["--method", "zero-shot"], "is a prompt method, nothing to train"),
    (["--method", "lora", "--param", 'targets=["nonexistent_proj"]'], "target modules ['nonexistent_proj'] not found"),
    (["--method", "lora", "--batch-size", "0"], "--batch-size"),
    (["--method", "lora", "--set", "packed_attention=flash"], "--packed-attention: Input should be"),
    (["--method", "lora", "--set", "no_such_setting=1"], "--no-such-setting: Extra inputs are not permitted"),
    (["--method", "lora", "--seed", "1", "--set", "seed=2"], "--set seed= repeats an option"),
    (["--method", "lora", "--dataset", "nope"], "unknown data set 'nope'"),
])
def test_bad_training_input_is_one_line(extra, message, tiny_causal_dir, memo, tmp_path):
    args = ["train", "--model", str(tiny_causal_dir), "--max-steps", "1", "--output", str(tmp_path / "run")]
    if "--dataset" not in extra:
        args += ["--dataset", f"jsonl:{memo}"]
    code, err, _ = run_cli(args + extra)
    assert code == 2, err
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_method_the_model_does_not_support_is_one_line(tiny_causal_dir, memo, tmp_path):
    from codepeft.models.quantization import bitsandbytes_problem

    if bitsandbytes_problem() or torch.cuda.is_available():
        pytest.skip("the narrow-layer limit is bitsandbytes' CPU path")
    code, err, _ = run_cli(["train", "--model", str(tiny_causal_dir), "--dataset", f"jsonl:{memo}",
                                 "--method", "qlora-4bit", "--output", str(tmp_path / "run")])
    assert code == 2 and "cannot run on this CPU for this model" in err


def test_adapter_for_another_base_is_refused(tiny_causal_dir, tiny_base_dir, tiny_seq2seq_dir, memo, tmp_path):
    from codepeft.models import load_model

    result = train(str(tiny_causal_dir), [f"jsonl:{memo}"], "lora", None, tmp_path / "run",
                   TrainSettings(max_steps=1, batch_size=4, dtype="float32", val_limit=2))
    for other in (tiny_base_dir, tiny_seq2seq_dir):
        with pytest.raises(CodepeftError, match="load the adapter with its base model"):
            load_model(other, dtype="float32", adapter=result.adapter_dir)
    with pytest.raises(CodepeftError, match="not a codepeft adapter"):
        load_model(tiny_causal_dir, dtype="float32", adapter=tmp_path)
    code, err, _ = run_cli(["merge", str(result.adapter_dir), "--base", str(tiny_base_dir), "--output",
                                 str(tmp_path / "merged")])
    assert code == 2 and "trained on" in err


def test_corrupted_checkpoint_and_adapter_are_one_line_errors(tiny_causal_dir, memo, tmp_path):
    from codepeft.models import load_model

    settings = TrainSettings(max_steps=2, epochs=10, batch_size=4, eval_every=1, dtype="float32", val_limit=2)
    result = train(str(tiny_causal_dir), [f"jsonl:{memo}"], "lora", None, tmp_path / "run", settings)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    (tmp_path / "run" / "config.json").write_text(json.dumps({**config, "finished": False}))  # as if killed
    checkpoint = sorted((tmp_path / "run" / "checkpoints").iterdir())[-1]
    (checkpoint / "trainable.pt").write_bytes(b"garbage")
    code, err, _ = run_cli(["train", "--model", str(tiny_causal_dir), "--dataset", f"jsonl:{memo}",
                                 "--max-steps", "4", "--epochs", "10", "--eval-every", "1", "--batch-size", "4",
                                 "--val-limit", "2",
                                 "--dtype", "float32", "--output", str(tmp_path / "run")])
    assert code == 2 and f"checkpoint {checkpoint} is corrupted" in err and "--no-resume" in err
    assert (result.adapter_dir / "adapter_model.safetensors").exists()  # nothing saved was lost

    (result.adapter_dir / "adapter_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CodepeftError, match="cannot load adapter"):
        load_model(tiny_causal_dir, dtype="float32", adapter=result.adapter_dir)


def test_full_disk_is_one_line_and_keeps_what_was_saved(tiny_causal_dir, memo, tmp_path, monkeypatch):
    settings = TrainSettings(max_steps=4, epochs=10, batch_size=4, eval_every=2, dtype="float32", val_limit=None)
    real_save = torch.save
    calls = {"n": 0}

    def fill_up(obj, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # the first checkpoint (2 files) fits, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fill_up)
    with pytest.raises(CodepeftError, match=r"no space left on device.*files saved before are kept"):
        train(str(tiny_causal_dir), [f"jsonl:{memo}"], "lora", {"lr": 1e-2}, tmp_path / "run", settings)
    saved = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert saved == ["step-0000002"]  # the complete one stays, the partial one is gone
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()


def test_target_only_logits_give_the_same_loss(tiny_causal_dir, memo):
    """The output head applied only where the loss counts gives transformers' own loss, packed or padded."""
    from codepeft.data import get_task
    from codepeft.models import load_model
    from codepeft.training.loop import target_loss_sum

    loaded = load_model(tiny_causal_dir, dtype="float32")
    task = get_task(f"jsonl:{memo}")
    items = tokenize_all(task, task.load("validation"), loaded, 512)
    count = sum(i.target_tokens(True) for i in items)
    pad = loaded.tokenizer.pad_token_id
    with torch.no_grad():
        for batching, row_tokens in (("packed", None), ("packed", 48), ("fixed", None)):
            batch = collate(items, batching, True, pad, 64, row_tokens)
            expected = float(loaded.model(**batch, use_cache=False).loss) * count
            assert float(target_loss_sum(loaded.model, batch)) == pytest.approx(expected, rel=1e-5)


def test_bf16_adapters_train_with_fp32_master_weights(tiny_causal_dir, memo, tmp_path):
    """On a bf16 base, LoRA computes in bf16 under autocast; its weights stay fp32 and learn like fp32 compute."""
    settings = {**FAST, "dtype": "bfloat16", "max_steps": 6, "eval_every": 6}
    fast = train(tiny_causal_dir, f"jsonl:{memo}", "lora", {"lr": 1e-2, "dropout": 0.0}, tmp_path / "bf16",
                 TrainSettings(**settings))
    exact = train(tiny_causal_dir, f"jsonl:{memo}", "lora", {"lr": 1e-2, "dropout": 0.0}, tmp_path / "fp32",
                  TrainSettings(**settings, bf16_adapters=False, target_logits=False))
    lora = [p for n, p in fast.model.named_parameters() if "lora_" in n]
    assert lora and all(p.dtype == torch.float32 for p in lora)
    assert all(p.dtype == torch.bfloat16 for n, p in fast.model.named_parameters() if "lora_" not in n)
    assert fast.best_val_loss < fast.initial_val_loss
    assert fast.best_val_loss == pytest.approx(exact.best_val_loss, rel=0.05)
    # after training, the in-memory model runs outside autocast again (peft's input casting is restored)
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        assert torch.isfinite(fast.model(input_ids=ids).logits.float()).all()


def test_attention_pairs_are_counted(tiny_causal_dir, memo, tmp_path):
    """4 steps of 4 over the 8 training examples: each is seen twice, and attends to its own prefix only."""
    result = train(tiny_causal_dir, f"jsonl:{memo}", "lora", None, tmp_path / "run", TrainSettings(**FAST))
    costs = json.loads((tmp_path / "run" / "costs.json").read_text())
    task = get_task(f"jsonl:{memo}")
    items = tokenize_all(task, task.load("train"), load_model(tiny_causal_dir), TrainSettings().max_length)
    assert len(items) == 8
    assert costs["tokens_seen"] == 2 * sum(item.real_tokens for item in items)
    assert costs["attention_pairs"] == 2 * sum(item.length * (item.length + 1) // 2 for item in items)
    assert result.costs["attention_pairs"] == costs["attention_pairs"]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc/self/clear_refs")
def test_peak_memory_is_measured_per_run():
    """A run's peak RSS is its own: what the process used before (an earlier arm of a study) does not count."""
    from codepeft.training.costs import peak_rss_bytes, reset_peak_memory

    block = bytearray(400 << 20)
    block[:: 1 << 12] = b"x" * len(block[:: 1 << 12])  # touch every page
    before = peak_rss_bytes()
    del block
    assert reset_peak_memory()
    after = peak_rss_bytes()
    assert after < before - (300 << 20), (before, after)


def test_budget_is_epochs_and_max_steps_only_caps_it(tiny_causal_dir, memo, tmp_path):
    # 8 training examples in batches of 4: 2 steps an epoch, so 2 epochs are 4 steps whatever the (higher) cap
    settings = TrainSettings(epochs=2, max_steps=100, batch_size=4, eval_every=1, dtype="float32", val_limit=None)
    result = train(str(tiny_causal_dir), [f"jsonl:{memo}"], "lora", {"r": 2}, tmp_path / "run", settings)
    assert result.steps == 4
    capped = TrainSettings(epochs=2, max_steps=3, batch_size=4, eval_every=1, dtype="float32", val_limit=None)
    assert train(str(tiny_causal_dir), [f"jsonl:{memo}"], "lora", {"r": 2}, tmp_path / "capped", capped).steps == 3
    verdict = json.loads((tmp_path / "run" / "costs.json").read_text())["convergence"]
    assert isinstance(verdict["converged"], bool) and verdict["reason"]
