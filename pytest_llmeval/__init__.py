"""pytest-llmeval: LLM evaluations as pytest tests.

The public API. Names are imported on first use, so that loading the plugin (which
imports this package) stays as cheap as pytest itself: pydantic and the dataset models
arrive only when a test or a user needs them.

The helpers raise their own messages, so pytest's assertion rewriting is not needed here
(and skipping it keeps pytester runs free of "already imported" warnings):
PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Dataset": "dataset",
    "Example": "dataset",
    "load_dataset": "dataset",
    "PARTITIONS": "partitions",
    "Record": "records",
    "current_record": "records",
    "MetricResult": "metrics",
    "Check": "metrics",
    "CheckOutcome": "metrics",
    "exact_match": "metrics",
    "token_f1": "metrics",
    "normalize_answer": "metrics",
    "max_length": "metrics",
    "min_length": "metrics",
    "forbidden_terms": "metrics",
    "required_phrases": "metrics",
    "matches_regex": "metrics",
    "valid_json": "metrics",
    "matches_schema": "metrics",
    "assert_exact_match": "assertions",
    "assert_token_f1": "assertions",
    "assert_constraints": "assertions",
    "assert_judge": "assertions",
    "assert_grounded": "assertions",
    "assert_preferred": "assertions",
    "assert_similar": "assertions",
    "assert_tool_calls": "assertions",
    "assert_retrieval": "assertions",
    "assert_steps": "assertions",
    "assert_task_completed": "assertions",
    "Trajectory": "trajectory",
    "traced": "trajectory",
    "StepLimitError": "errors",
    "Judge": "judge",
    "JudgeResult": "judge",
    "PairwiseResult": "judge",
    "Claim": "grounding",
    "GroundingResult": "grounding",
    "Anchor": "judge",
    "batched": "plugin.batching",
    "Similarity": "embeddings",
    "compare_texts": "embeddings",
    "acompare_texts": "embeddings",
    "detect_regression": "stats.regression",
    "Comparison": "stats.comparison",
    "JudgeFamilyWarning": "errors",
    "DatasetError": "errors",
    "LLMEvalAssertionError": "errors",
    "LLMEvalError": "errors",
    "LLMEvalWarning": "errors",
    "EmptySelectionWarning": "errors",
    "ConfigError": "errors",
    "LLMCallError": "errors",
    "RateLimitError": "errors",
    "CallTimeoutError": "errors",
    "ServerError": "errors",
    "AuthError": "errors",
    "BadRequestError": "errors",
    "ConnectionFailedError": "errors",
    "BadResponseError": "errors",
    "JudgeError": "errors",
    "CacheMissError": "errors",
    "CacheCorruptError": "errors",
}

# Spelled out (not derived from _EXPORTS) so that type checkers see the exports.
__all__ = [
    "PARTITIONS",
    "Anchor",
    "AuthError",
    "BadRequestError",
    "BadResponseError",
    "CacheCorruptError",
    "CacheMissError",
    "CallTimeoutError",
    "Check",
    "CheckOutcome",
    "Claim",
    "Comparison",
    "ConfigError",
    "ConnectionFailedError",
    "Dataset",
    "DatasetError",
    "EmptySelectionWarning",
    "Example",
    "GroundingResult",
    "Judge",
    "JudgeError",
    "JudgeFamilyWarning",
    "JudgeResult",
    "LLMCallError",
    "LLMEvalAssertionError",
    "LLMEvalError",
    "LLMEvalWarning",
    "MetricResult",
    "PairwiseResult",
    "RateLimitError",
    "Record",
    "ServerError",
    "Similarity",
    "StepLimitError",
    "Trajectory",
    "__version__",
    "acompare_texts",
    "assert_constraints",
    "assert_exact_match",
    "assert_grounded",
    "assert_judge",
    "assert_preferred",
    "assert_retrieval",
    "assert_similar",
    "assert_steps",
    "assert_task_completed",
    "assert_token_f1",
    "assert_tool_calls",
    "batched",
    "compare_texts",
    "current_record",
    "detect_regression",
    "exact_match",
    "forbidden_terms",
    "load_dataset",
    "matches_regex",
    "matches_schema",
    "max_length",
    "min_length",
    "normalize_answer",
    "required_phrases",
    "token_f1",
    "traced",
    "valid_json",
]

if TYPE_CHECKING:
    from .assertions import (
        assert_constraints,
        assert_exact_match,
        assert_grounded,
        assert_judge,
        assert_preferred,
        assert_retrieval,
        assert_similar,
        assert_steps,
        assert_task_completed,
        assert_token_f1,
        assert_tool_calls,
    )
    from .dataset import Dataset, Example, load_dataset
    from .embeddings import Similarity, acompare_texts, compare_texts
    from .errors import (
        AuthError,
        BadRequestError,
        BadResponseError,
        CacheCorruptError,
        CacheMissError,
        CallTimeoutError,
        ConfigError,
        ConnectionFailedError,
        DatasetError,
        EmptySelectionWarning,
        JudgeError,
        JudgeFamilyWarning,
        LLMCallError,
        LLMEvalAssertionError,
        LLMEvalError,
        LLMEvalWarning,
        RateLimitError,
        ServerError,
        StepLimitError,
    )
    from .grounding import Claim, GroundingResult
    from .judge import Anchor, Judge, JudgeResult, PairwiseResult
    from .metrics import (
        Check,
        CheckOutcome,
        MetricResult,
        exact_match,
        forbidden_terms,
        matches_regex,
        matches_schema,
        max_length,
        min_length,
        normalize_answer,
        required_phrases,
        token_f1,
        valid_json,
    )
    from .partitions import PARTITIONS
    from .plugin.batching import batched
    from .records import Record, current_record
    from .stats.comparison import Comparison
    from .stats.regression import detect_regression
    from .trajectory import Trajectory, traced


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_llmeval' has no attribute {name!r}")
    # Not cached in globals(): pytester's in-process runs drop modules imported during a
    # run, and a cached name would then mix classes from two imports of one module.
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(__all__)
