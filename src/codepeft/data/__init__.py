"""Data sets as small task objects: load a split into uniform ``Example``s, say what the model is
asked and what it should write, postprocess its output. Every task is registered by name."""

from codepeft.data.base import TASKS, Example, Task, get_task, register_task

__all__ = ["TASKS", "Example", "Task", "get_task", "register_task"]
