"""Data sets as small task objects: load a split into uniform ``Example``s, say what the model is
asked and what it should write, postprocess its output. Every task is registered by name."""

from codepeft.data.base import TASKS, Example, Task, get_task, register_task

__all__ = ["TASKS", "Example", "Task", "get_task", "register_task"]


def _register_builtin_tasks() -> None:
    """Import every task module in this package so its ``@register_task`` runs."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if info.name not in {"base", "prompts", "postprocess"}:
            importlib.import_module(f"{__name__}.{info.name}")


_register_builtin_tasks()
