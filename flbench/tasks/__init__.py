"""Tasks for utility scoring, registered by name (`flbench ls tasks`)."""
from flbench.tasks import glue, superglue  # noqa: F401  (registration)
from flbench.tasks.base import CARVE_SEED, Example, Task, carve, get_task, tasks

__all__ = ["CARVE_SEED", "Example", "Task", "carve", "get_task", "tasks"]
