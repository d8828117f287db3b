"""Tasks for utility scoring, registered by name (`flbench ls tasks`): multiple-choice tasks (kind "choice",
log-likelihood of verbalised answers) and generative tasks (kind "generate", greedy text scored against
references)."""
from flbench.tasks import conversational, glue, private_qa, summarization, superglue  # noqa: F401  (registration)
from flbench.tasks.base import CARVE_SEED, Example, Task, carve, get_task, tasks
from flbench.tasks.generative import GenerativeTask
from flbench.tasks.hub import Hub

__all__ = ["CARVE_SEED", "Example", "GenerativeTask", "Hub", "Task", "carve", "get_task", "tasks"]
