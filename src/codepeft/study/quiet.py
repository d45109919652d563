"""Keep third-party chatter out of a study's output: warnings, library logs and progress bars go to a file.

While a study runs, Python warnings (e.g. transformers' ``is_gradient_checkpointing`` FutureWarning),
the log records of transformers, peft, accelerate, bitsandbytes (its "Failed to load CPU
gemm_4bit_forward from kernels-community"), huggingface_hub and kernels, and their progress bars
(weight loading) are written to ``<study>/third-party.log`` instead of the terminal. Everything is
restored afterwards, so a library user's own logging set-up is untouched outside a study.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

LOG_NAME = "third-party.log"
LIBRARIES = ("transformers", "peft", "accelerate", "bitsandbytes", "huggingface_hub", "kernels", "torch",
             "py.warnings", "codebleu", "tree_sitter")


@contextmanager
def third_party_output(log_path: Path) -> Iterator[logging.Handler]:
    """Route third-party warnings, logs and progress bars to ``log_path`` for the duration of the block."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    saved_env = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read when huggingface_hub/transformers are imported
    restore_bars = _no_progress_bars()  # first: importing transformers' logging sets up its own handler
    loggers = [logging.getLogger(name) for name in LIBRARIES]
    saved = [(lg, list(lg.handlers), lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.handlers = [handler]
        lg.propagate = False
    logging.captureWarnings(True)
    try:
        yield handler
    finally:
        logging.captureWarnings(False)
        for lg, handlers, propagate in saved:
            lg.handlers, lg.propagate = handlers, propagate
        if saved_env is None:
            os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
        else:
            os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = saved_env
        restore_bars()
        handler.close()


def _no_progress_bars() -> Callable[[], None]:
    """transformers and huggingface_hub each keep a progress-bar switch: turn both off (imported lazily)."""
    try:
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
        from transformers.utils import logging as hf_logging
    except ImportError:
        return lambda: None
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hub_bars_were_on = not are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    disable_progress_bars()

    def restore() -> None:
        if bars_were_on:
            hf_logging.enable_progress_bar()
        if hub_bars_were_on:
            enable_progress_bars()

    return restore
