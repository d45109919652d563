"""``codepeft train`` options come from ``TrainSettings``: every field is a flag, documented flags keep working."""

from __future__ import annotations

import pytest
import typer

import codepeft.cli.train  # registers the command on the app
import codepeft.training
from codepeft.cli import main
from codepeft.cli.app import app
from codepeft.training.settings import TrainSettings


def train_settings(monkeypatch, capsys, *flags: str) -> tuple[int, str, TrainSettings | None]:
    """Run ``codepeft train`` with ``flags``, the training itself replaced by a recorder of its settings."""
    seen: list[TrainSettings] = []

    def record(model, datasets, method, params, output, settings, *args, **kwargs):
        seen.append(settings)
        raise SystemExit(0)  # stands in for the training run: only the settings are under test

    monkeypatch.setattr(codepeft.training, "train", record)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "-o", "unused-run-dir", *flags])
    return int(exit_info.value.code or 0), capsys.readouterr().err, (seen[0] if seen else None)


def test_every_settings_field_is_a_flag_with_its_description():
    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    options = {param.name: param for param in command.params}
    for name, field in TrainSettings.model_fields.items():
        assert name in options, f"TrainSettings.{name} has no train flag"
        assert field.description, f"TrainSettings.{name} needs a description: it is the flag's help"
    assert "--patience" in options["early_stopping_patience"].opts  # the documented short name
    assert options["fused_lora"].secondary_opts == ["--no-fused-lora"]


def test_flags_reach_the_settings(monkeypatch, capsys):
    code, err, settings = train_settings(
        monkeypatch, capsys, "--max-steps", "3", "--patience", "2", "--evals-per-epoch", "5", "--no-fused-lora",
        "--batching", "grouped", "--gradient-checkpointing", "--no-resume", "--set", "log_every=7")
    assert code == 0 and settings is not None, err
    assert (settings.max_steps, settings.early_stopping_patience, settings.evals_per_epoch) == (3, 2, 5)
    assert (settings.fused_lora, settings.batching, settings.gradient_checkpointing) == (False, "grouped", True)
    assert (settings.resume, settings.log_every, settings.force) == (False, 7, False)
    assert settings.epochs == TrainSettings().epochs  # not given: the model's default


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--batching", "fast"], "training settings: --batching: Input should be 'packed'"),
        (["--evals-per-epoch", "0"], "training settings: --evals-per-epoch: Input should be greater than or equal"),
        (["--max-steps", "2", "--set", "max_steps=3"], "--set max_steps= repeats an option given already"),
    ],
)
def test_bad_settings_are_one_line_errors(monkeypatch, capsys, flags, expected):
    code, err, settings = train_settings(monkeypatch, capsys, *flags)
    assert code == 2 and settings is None and expected in err and len(err.strip().splitlines()) == 1, err
