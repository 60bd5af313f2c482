"""Tasks with verifiable rewards: a seeded prompt stream and a verifier the trainer re-runs."""
from nodes.tasks.base import Prompt, Task, TaskError, make_task

__all__ = ["Prompt", "Task", "TaskError", "make_task"]
