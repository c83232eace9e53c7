"""Fine-tuning tasks: one object per kind of label (head, loss, augmentation, metrics)."""

from selfsup.finetune.tasks.base import Task
from selfsup.finetune.tasks.classification import Classification
from selfsup.finetune.tasks.detection import DETECTION_STRATEGIES, Detection, DetectorConfig
from selfsup.finetune.tasks.segmentation import IGNORE_INDEX, Segmentation

TASKS: dict[str, type[Task]] = {
    "classification": Classification,
    "segmentation": Segmentation,
    "detection": Detection,
}

__all__ = [
    "DETECTION_STRATEGIES",
    "IGNORE_INDEX",
    "TASKS",
    "Classification",
    "Detection",
    "DetectorConfig",
    "Segmentation",
    "Task",
]
