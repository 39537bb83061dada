"""Sharding a run's eval examples over N jobs (``--llmeval-shard I/N``): each example's
shard is a stable hash of its dataset and id, so adding an example never moves another,
and every draw of an example stays in its shard (the statistics pair them)."""

from __future__ import annotations

import hashlib
import re

from .errors import ConfigError

Shard = tuple[int, int]  # (index, count), 1 <= index <= count


def parse_shard(text: str) -> Shard | None:
    """``"2/4"`` as (2, 4); ``""`` as None. ConfigError for anything else."""
    text = text.strip()
    if not text:
        return None
    found = re.fullmatch(r"(\d+)\s*/\s*(\d+)", text)
    if found is None or not 1 <= int(found[1]) <= int(found[2]):
        raise ConfigError(
            f"llmeval_shard: {text!r} is not I/N with 1 <= I <= N (e.g. 2/4: the second of "
            "four shards)"
        )
    return int(found[1]), int(found[2])


def shard_of(dataset: str | None, example_id: str, count: int) -> int:
    """The shard (1..count) of an example: the first 8 bytes of the sha256 of its dataset
    name and id, modulo ``count``."""
    digest = hashlib.sha256(f"{dataset or ''}\0{example_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count + 1
