"""The convergence decision over a validation-loss history."""

from __future__ import annotations

from codepeft.training.convergence import convergence, history_from_log


def test_still_falling_at_the_end_is_not_converged():
    verdict = convergence([(0, 3.0), (10, 2.0), (20, 1.5), (30, 1.2)])
    assert not verdict.converged and "still falling" in verdict.reason


def test_flat_or_rising_at_the_end_is_converged():
    assert convergence([(0, 3.0), (10, 2.0), (20, 1.5), (30, 1.495)]).converged  # 0.3% gain: a plateau
    assert convergence([(0, 3.0), (10, 2.0), (20, 1.5), (30, 1.6)]).converged  # early stopping's case


def test_too_few_validations_cannot_tell():
    verdict = convergence([(0, 3.0), (10, 2.0)])
    assert not verdict.converged and "too few" in verdict.reason


def test_history_from_a_train_log_keeps_the_last_of_a_repeated_step():
    lines = [{"step": 0, "val_loss": 3.0}, {"step": 1, "loss": 2.9}, {"step": 5, "val_loss": 2.5},
             {"step": 5, "val_loss": 2.4}, {"step": 10, "val_loss": 2.3}]
    assert history_from_log(lines) == [(0, 3.0), (5, 2.4), (10, 2.3)]
