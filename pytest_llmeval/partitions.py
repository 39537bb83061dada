"""The four partitions every example belongs to; kept apart so that the plugin can name
them without importing the dataset models."""

from typing import Literal

PARTITIONS: tuple[str, ...] = ("golden", "regression", "adversarial", "distribution")
Partition = Literal["golden", "regression", "adversarial", "distribution"]
