"""The client layer over the official ``openai`` package: the sync client and its async
twin with retries and limits (llm.py), what one run's clients share and the thread pool
(pools.py), the response cache (cache.py), prices (pricing.py)."""

from ..errors import ERROR_CLASSES, LLMCallError
from .llm import (
    CHAT,
    EMBEDDINGS,
    AsyncLLMClient,
    CallStats,
    ClientConfig,
    LLMClient,
    build_client,
    classify,
    interrupt_all,
    off_loop,
)
from .pools import DaemonPool, Pools

__all__ = [
    "CHAT",
    "EMBEDDINGS",
    "ERROR_CLASSES",
    "AsyncLLMClient",
    "CallStats",
    "ClientConfig",
    "DaemonPool",
    "LLMCallError",
    "LLMClient",
    "Pools",
    "build_client",
    "classify",
    "interrupt_all",
    "off_loop",
]
