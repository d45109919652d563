"""The study file: YAML + key=value overrides, validated, with one-line errors naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codepeft.cli import main
from codepeft.errors import CodepeftError
from codepeft.study.config import apply_overrides, load_study, parse_overrides, validate_study
from codepeft.study.runs import plan_runs

BASE = {
    "name": "t",
    "models": ["some-model"],
    "datasets": [{"task": "humaneval", "train_split": "study-train", "test_split": "study-test"}],
    "arms": {"zero-shot": {}, "lora": {"params": {"r": 8}}},
}


def write_study(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def cli(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.err + captured.out


def test_default_study_is_packaged_and_valid():
    config = load_study(None)
    assert config.models == ["smollm2-135m"]
    assert set(config.arms) >= {"zero-shot", "icl", "rag", "lora", "ia3"}
    assert config.datasets[0].task == "conala" and config.datasets[0].test_split == "test"
    assert config.primary_metric == "codebleu"
    # budgets in epochs with early stopping on a real validation set; max_steps only a cap above one epoch
    assert config.training["epochs"] == 1 and config.training["early_stopping_patience"] >= 1
    assert config.limits.val_size >= 100
    assert config.limits.max_steps > config.limits.train_size / config.training["batch_size"]


def test_overrides_dotted_keys_parse_yaml_values():
    assert parse_overrides(["limits.test_size=20", "models=[a, b]", "x.y=null"]) == [
        (["limits", "test_size"], 20), (["models"], ["a", "b"]), (["x", "y"], None)]
    data = apply_overrides(BASE, ["arms.lora.params.r=4", "limits.max_steps=3", "datasets.0.test_split=test",
                                  "generation.max_new_tokens=32"])
    config = validate_study(data, [])
    assert config.arms["lora"].params == {"r": 4}
    assert config.limits.max_steps == 3
    assert config.datasets[0].test_split == "test"
    assert config.generation.max_new_tokens == 32
    assert BASE["arms"]["lora"]["params"]["r"] == 8  # the raw mapping is not modified


def test_arms_as_list_and_strings_are_normalized():
    config = validate_study({**BASE, "arms": ["zero-shot", {"name": "lora-r4", "method": "lora", "params": {"r": 4}}],
                             "datasets": ["humaneval"], "models": "m"}, [])
    assert list(config.arms) == ["zero-shot", "lora-r4"]
    assert config.method_of("lora-r4") == "lora" and config.method_of("zero-shot") == "zero-shot"
    assert config.datasets[0].task == "humaneval" and config.models == ["m"]


def test_override_on_list_form_arms():
    config = validate_study({**BASE, "arms": ["zero-shot", "lora"]}, ["arms.lora.params.r=2"])
    assert config.arms["lora"].params == {"r": 2}


def test_training_for_applies_step_cap_and_seed():
    config = validate_study({**BASE, "training": {"max_steps": 50, "batch_size": 2}, "limits": {"max_steps": 5,
                             "train_size": 10}}, [])
    merged = config.training_for("lora", seed=3)
    assert merged["max_steps"] == 5 and merged["seed"] == 3 and merged["train_limit"] == 10
    assert merged["batch_size"] == 2


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("limits.tests_size=3", "limits.tests_size: unknown key"),
        ("limits.test_size=0", "limits.test_size: Input should be greater than or equal to 1"),
        ("generation.strategy=fast", "generation.strategy"),
        ("bogus=1", "bogus: unknown key"),
        ("ks=[0]", "ks: Value error, every k must be >= 1"),
        ("arms.lora.paramz.r=3", "arms.lora.paramz: unknown key"),
    ],
)
def test_wrong_key_or_value_is_one_line_error(override, expected):
    with pytest.raises(CodepeftError) as err:
        validate_study(BASE, [override], "s.yaml")
    message = str(err.value)
    assert expected in message and "\n" not in message and message.startswith("s.yaml: ")


def test_malformed_override_is_an_error():
    with pytest.raises(CodepeftError, match="is not key=value"):
        parse_overrides(["=3"])
    with pytest.raises(CodepeftError, match="index below 1"):
        apply_overrides(BASE, ["datasets.5.test_split=x"])


def test_empty_study_file(tmp_path, capsys):
    code, output = cli(["study", str(write_study(tmp_path, "# nothing here\n"))], capsys)
    assert code == 2 and "is an empty study" in output and "Traceback" not in output


def test_study_with_no_arms(tmp_path, capsys):
    path = write_study(tmp_path, "models: [m]\ndatasets: [humaneval]\narms: []\n")
    code, output = cli(["study", str(path)], capsys)
    assert code == 2 and "arms is empty" in output


def test_missing_study_file(tmp_path, capsys):
    code, output = cli(["study", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and "not found" in output


def test_invalid_yaml(tmp_path, capsys):
    code, output = cli(["study", str(write_study(tmp_path, "models: [a\n"))], capsys)
    assert code == 2 and "not valid YAML" in output


def test_unknown_arm_through_cli(tmp_path, capsys, tiny_causal_dir):
    path = write_study(tmp_path, f"models: [{tiny_causal_dir}]\ndatasets: [humaneval]\narms: [zero-shot, magic]\n")
    code, output = cli(["study", str(path), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "unknown method 'magic'" in output
    assert not (tmp_path / "out" / "runs").exists()  # nothing ran


def test_wrong_method_parameter_names_the_arm(tmp_path):
    config = validate_study({**BASE, "arms": {"lora": {"params": {"rank": 3}}}}, [])
    with pytest.raises(CodepeftError, match=r"arms\.lora\.params"):
        plan_runs(config, check_models=False)


def test_model_not_found_through_cli(tmp_path, capsys):
    path = write_study(tmp_path, "models: [./no/such/model]\ndatasets: [humaneval]\narms: [zero-shot]\n")
    code, output = cli(["study", str(path), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "not found" in output and "no/such/model" in output


def test_passk_on_data_without_tests_through_cli(tmp_path, capsys, tiny_causal_dir):
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"intent": f"do {i}", "code": f"x = {i}"}) for i in range(3)) + "\n")
    path = write_study(tmp_path, f"models: [{tiny_causal_dir}]\ndatasets: ['jsonl:{data}']\narms: [zero-shot]\n"
                                 "metrics: [em, passk]\n")
    code, output = cli(["study", str(path), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "has no tests" in output and "pass@k" in output


def test_primary_metric_must_be_computed(tmp_path):
    config = validate_study({**BASE, "metrics": ["em"], "primary_metric": "pass@1"}, [])
    with pytest.raises(CodepeftError, match="primary_metric 'pass@1' is not computed"):
        plan_runs(config, check_models=False)


def test_run_ids_follow_the_config(tmp_path):
    config = validate_study(BASE, [])
    first = {r.arm: r.run_id for r in plan_runs(config, check_models=False)}
    again = {r.arm: r.run_id for r in plan_runs(config, check_models=False)}
    assert first == again
    changed = {r.arm: r.run_id for r in plan_runs(validate_study(BASE, ["arms.lora.params.r=4"]), check_models=False)}
    assert changed["zero-shot"] == first["zero-shot"] and changed["lora"] != first["lora"]
    steps = {r.arm: r.run_id for r in plan_runs(validate_study(BASE, ["limits.max_steps=7"]), check_models=False)}
    assert steps["zero-shot"] == first["zero-shot"] and steps["lora"] != first["lora"]


PRESETS = Path(__file__).resolve().parents[1] / "studies"


@pytest.mark.parametrize("name", ["conala", "codealpacapy", "apps"])
def test_presets_are_valid_studies(name):
    config = load_study(PRESETS / f"{name}.yaml")
    assert {"zero-shot", "icl", "rag", "lora", "ia3", "prompt-tuning", "prefix-tuning"} <= set(config.arms)
    assert config.ks == [1, 2, 5, 10]
    from codepeft.methods import get_method

    for arm, spec in config.arms.items():
        get_method(config.method_of(arm)).params(spec.params)  # every arm's parameters validate


def test_mbpp_replication_plans_the_whole_test_split(data_dir):
    config = load_study(PRESETS / "mbpp.yaml")
    runs = plan_runs(config, data_dir, check_models=False)
    assert {r.arm for r in runs} == {"zero-shot", "icl", "rag", "lora", "ia3", "qlora-8bit"}
    assert all(r.dataset.primary_metric == "pass@1" and r.generation.n == 10 for r in runs)
    assert runs[0].dataset.test_count == 500


@pytest.mark.parametrize("name", ["conala", "codealpacapy"])
def test_presets_plan_on_the_local_data_with_a_swapped_model(name, data_dir):
    config = load_study(PRESETS / f"{name}.yaml", ["models=[smollm2-135m]"])
    runs = plan_runs(config, data_dir, check_models=False)
    assert len(runs) == sum(len(config.seeds_for(arm)) for arm in config.arms)
    assert {r.model for r in runs} == {"smollm2-135m"}
    assert all(r.dataset.metrics == config.metrics for r in runs)


def test_apps_preset_prompt_arms_plan_offline(data_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = load_study(PRESETS / "apps.yaml", ["models=[smollm2-135m]", "arms=[zero-shot]"])
    runs = plan_runs(config, data_dir, check_models=False)
    assert runs[0].dataset.primary_metric == "pass@1" and "passk" in runs[0].dataset.metrics


def test_override_reaches_into_datasets_given_by_name_and_replaces_mappings():
    raw = {**BASE, "datasets": ["humaneval"], "arms": {"lora": {"params": {"r": 8, "alpha": 16}}}}
    config = validate_study(raw, ["datasets.0.test_split=study-test", "arms.lora.params={r: 2}", "training.lr=1e-4"])
    assert config.datasets[0].task == "humaneval" and config.datasets[0].test_split == "study-test"
    assert config.arms["lora"].params == {"r": 2}  # a mapping value replaces the old mapping, it is not merged
    assert float(config.training["lr"]) == 1e-4
    with pytest.raises(CodepeftError, match=r"^override datasets\.first: use an index below 1 for this list$"):
        apply_overrides(raw, ["datasets.first.test_split=x"])


def test_planned_method_params_are_validated_once_and_passed_as_objects(data_dir, monkeypatch):
    import codepeft.training
    from codepeft.methods import get_method
    from codepeft.study.engines import train_arm

    config = load_study(PRESETS / "conala.yaml", ["models=[smollm2-135m]", "arms=[lora]", "arms.lora.params.r=4",
                                                  "comparisons=[]"])
    (spec,) = plan_runs(config, data_dir, check_models=False)
    lora = get_method("lora")
    assert isinstance(spec.params, lora.Params) and spec.params.r == 4
    assert lora.params(spec.params) is spec.params  # validated parameters are taken as they are
    seen = []
    monkeypatch.setattr(codepeft.training, "train", lambda *args, **kwargs: seen.append(args))
    train_arm(spec, data_dir / "unused", data_dir)
    assert seen[0][3] is spec.params and seen[0][5] is spec.training  # objects, no dict round trip
    assert spec.key["params"]["r"] == 4  # the run key still holds plain JSON


def test_an_arm_may_run_more_seeds_than_the_study():
    plain = {r.arm: r.run_id for r in plan_runs(validate_study(BASE, []), check_models=False)}
    config = validate_study(BASE, ["arms.lora.seeds=[0,1,2]"])
    runs = plan_runs(config, check_models=False)
    assert sorted((r.arm, r.seed) for r in runs) == [("lora", 0), ("lora", 1), ("lora", 2), ("zero-shot", 0)]
    # the seed the study shares keeps its run: adding seeds to an arm reuses what was run
    assert {r.arm: r.run_id for r in runs if r.seed == 0} == plain
    with pytest.raises(CodepeftError, match="same seed twice"):
        validate_study(BASE, ["arms.lora.seeds=[1,1]"])
