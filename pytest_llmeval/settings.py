"""Every option: its name, help and default (``OPTIONS``), and the parsing of their
values into one frozen Settings (``build``) and the regression's keys
(``regression_settings``, which ``llmeval compare`` reads too). No pytest here:
plugin/settings.py registers the options and hands their values over (a flag, else its
ini key). Bad values raise ``ConfigError`` naming the value and the valid ones.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .client.cache import CACHE_MODES
from .client.llm import MAX_CONCURRENCY, ClientConfig
from .client.pricing import parse_prices
from .errors import ConfigError
from .partitions import PARTITIONS
from .shards import Shard, parse_shard

DEFAULT_HARD = ("golden", "regression")
DEFAULT_MIN_PASS_RATE = {"regression": 1.0, "adversarial": 0.9, "distribution": 0.85}
OTEL_MODES = ("auto", "off")
# An example's verdict over its draws: every draw passed (pass^k), most did, one did
# (pass@k), or each metric's mean score over the draws reaches its threshold.
REDUCERS = ("all", "majority", "any", "mean")
DEFAULT_REDUCER = {"golden": "all", "regression": "all", "adversarial": "majority"}
FLAKY_MODES = ("fail", "warn", "ignore")

# (name, help, default) for each key that is both a flag and an ini key.
OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("report", "write the whole run as JSON to this path (records, aggregates, verdicts)", ""),
    ("html", "write the run as one self-contained HTML page to this path", ""),
    (
        "markdown",
        "write the run's verdicts, regression table and top failures as Markdown to this "
        "path (also appended to $GITHUB_STEP_SUMMARY when set)",
        "",
    ),
    (
        "history_dir",
        "add each run's report (compressed) to this folder, for llmeval history",
        "",
    ),
    (
        "junit_properties",
        "yes: each eval test's JUnit testcase carries its example, partition, scores and "
        "cost as properties (xunit1; xunit2 validators reject them)",
        "no",
    ),
    ("tags", "run only eval examples carrying one of these tags (comma-separated)", ""),
    (
        "shard",
        "run shard I of N (I/N, e.g. 2/4): the eval examples whose stable hash of dataset "
        "and id falls in it; tests that are not dataset examples run in shard 1",
        "",
    ),
    (
        "hard_partitions",
        "partitions where each failure fails the session (default: golden regression)",
        " ".join(DEFAULT_HARD),
    ),
    (
        "min_pass_rate",
        "minimum pass rate of soft partitions, e.g. 'adversarial:0.9 distribution:0.85'",
        "",
    ),
    ("thresholds", "metric thresholds, e.g. 'token_f1:0.8 token_f1.golden:0.9'", ""),
    (
        "time_budget",
        "wall-time budget in seconds per partition, e.g. 'golden:300 distribution:1200'",
        "",
    ),
    ("time_budget_strict", "yes: a partition over its time budget fails the session", "no"),
    (
        "bar_locked",
        "yes: a bar lower than the baseline's (a hard example not run, a minimum pass rate "
        "or threshold lowered, a partition made soft, a gate dropped, delta raised, alpha "
        "lowered) fails the session, unless each lowering is in llmeval_bar_accept",
        "no",
    ),
    (
        "bar_accept",
        "the lowerings of the bar accepted under llmeval_bar_locked, by the key the summary "
        "gives each (e.g. example:golden-refund-01 min_pass_rate:distribution)",
        "",
    ),
    ("cache", f"response cache mode: {', '.join(CACHE_MODES)} (default: use)", "use"),
    ("cache_dir", "response cache folder, relative to the rootdir", ".llmeval-cache"),
    ("max_retries", "retries of a failed model call (429, 5xx, timeouts, drops)", "4"),
    (
        "timeout_retries",
        "retries of a model call whose request timed out (at most max_retries): a local "
        "server keeps working on a request the client gave up on, and a retry queues behind it",
        "1",
    ),
    ("retry_base_delay", "first backoff delay in seconds, doubled per retry, jittered", "0.5"),
    ("prices", "USD per million tokens, e.g. 'gpt-4o-mini=0.15/0.60 gpt-4o=2.5/10'", ""),
    ("judge_samples", "judge samples per verdict, requested concurrently", "1"),
    (
        "judge_models",
        "a judge panel: two or more judge models, comma-separated, each asked every rubric "
        "and pairwise verdict (mean, majority); default: one judge, llmeval_judge_model",
        "",
    ),
    (
        "judge_max_tokens",
        "max_tokens of each judge reply (a grounding reply gets twice as many)",
        "1024",
    ),
    (
        "max_position_bias",
        "share of pairwise comparisons whose two orders may disagree before the pairwise "
        "judge is unreliable (a warning; an error on golden and regression)",
        "0.3",
    ),
    (
        "concurrency",
        "examples a batched fixture computes at once (pytest_llmeval.batched): a whole "
        "number, or 'auto' (as many as each endpoint's adaptive limit lets through)",
        "auto",
    ),
    (
        "repeat",
        "draws of each example: a count for every partition ('3'), per partition "
        "('golden:3 distribution:1'), or 'auto' (from the baseline's variance; see llmeval plan)",
        "1",
    ),
    ("repeat_max", "the most draws per example that llmeval_repeat = auto chooses", "5"),
    (
        "reducer",
        "an example's verdict over its draws, per partition: all (pass^k), majority, any "
        "(pass@k) or mean (each metric's mean score against its threshold)",
        "golden:all regression:all adversarial:majority distribution:mean",
    ),
    (
        "flaky",
        "what an example whose draws disagree does to the gate: fail, warn or ignore, for "
        "every partition or per partition (default: fail on hard partitions, warn on soft)",
        "",
    ),
    (
        "embedding_model",
        "embeddings for assert_similar: 'local' (the local extra's all-MiniLM-L6-v2) or an "
        "OpenAI-compatible embedding model, e.g. text-embedding-3-small",
        "local",
    ),
    (
        "embedding_base_url",
        "OpenAI-compatible base URL of the embedding model (default: the app's)",
        "",
    ),
    (
        "otel",
        "OpenTelemetry GenAI spans as trajectory steps: auto (when opentelemetry-sdk is "
        "installed and the app imported opentelemetry) or off",
        "auto",
    ),
    (
        "baseline",
        "compare this run with an earlier run's JSON report (the baseline); a flag's path is "
        "relative to the current directory, an ini key's to the rootdir",
        "",
    ),
    ("save_baseline", "regression: write this run as a baseline (a JSON report) to this path", ""),
    (
        "gate",
        "regression: the gated metrics, 'metric' for every partition or "
        "'metric.partition' (metrics: pass_rate, judge, tool_calls, retrieval_recall)",
        "pass_rate judge",
    ),
    (
        "delta",
        "regression: the practical threshold δ per metric, e.g. 'judge:0.3 pass_rate:0.05'",
        "",
    ),
    ("alpha", "regression: significance level of the gated family (Holm across it)", "0.05"),
    ("strict", "regression: yes, an inconclusive comparison whose CI reaches -delta blocks", "no"),
    ("regression_fails", "regression: whether REGRESSION and REFUSED fail the session", "yes"),
    *(
        (f"{prefix}{name}", f"{role}: {text}", default)
        for prefix, role, defaults in (
            ("", "model under test (llm fixture)", {"temperature": ""}),
            ("judge_", "judge (judge_client fixture)", {"temperature": "0"}),
        )
        for name, text, default in (
            ("model", "model name", ""),
            ("base_url", "OpenAI-compatible base URL (else $OPENAI_BASE_URL)", ""),
            ("temperature", "sampling temperature", defaults["temperature"]),
            (
                "max_concurrency",
                "requests in flight per endpoint (with llmeval_concurrency = auto, the ceiling "
                "of the adaptive limit)",
                str(MAX_CONCURRENCY),
            ),
            ("timeout", "seconds before a request times out", "60"),
        )
    ),
)


DEFAULT_DELTA = {"judge": 0.3, "pass_rate": 0.05, "tool_calls": 0.05, "retrieval_recall": 0.05}
GATED_METRICS = tuple(DEFAULT_DELTA)


@dataclass(frozen=True)
class RegressionSettings:
    """How this run is compared with a baseline (see STATISTICS in the README)."""

    baseline: Path | None = None
    save_baseline: Path | None = None
    gate: tuple[tuple[str, str | None], ...] = (("pass_rate", None), ("judge", None))
    delta: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_DELTA))
    alpha: float = 0.05
    strict: bool = False
    fails: bool = True

    def gated(self, metric: str, partition: str) -> bool:
        return any(m == metric and p in (None, partition) for m, p in self.gate)


@dataclass(frozen=True)
class Settings:
    """The plugin's effective configuration for one session."""

    report: Path | None = None
    html: Path | None = None  # the run's page (llmeval_html)
    markdown: Path | None = None  # the run's pull-request summary (llmeval_markdown)
    history_dir: Path | None = None  # where each run's report is kept (llmeval_history_dir)
    junit_properties: bool = False  # per-testcase JUnit properties
    tags: tuple[str, ...] = ()
    shard: Shard | None = None  # (index, count) of llmeval_shard
    hard_partitions: frozenset[str] = frozenset(DEFAULT_HARD)
    min_pass_rate: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIN_PASS_RATE))
    thresholds: dict[str, float] = field(default_factory=dict)
    time_budget: dict[str, float] = field(default_factory=dict)  # seconds per partition
    time_budget_strict: bool = False
    bar_locked: bool = False  # a lowered bar fails the session (llmeval_bar_locked)
    bar_accept: frozenset[str] = frozenset()  # lowerings accepted by key
    datasets_dir: Path | None = None
    cache_mode: str = "use"
    cache_dir: Path = Path(".llmeval-cache")
    judge_samples: int = 1
    judge_models: tuple[str, ...] = ()  # a judge panel; () is the one judge_model
    judge_max_tokens: int = 1024
    max_position_bias: float = 0.3
    concurrency: int | None = None  # None: auto (the endpoints' adaptive limits pace)
    embedding_model: str = "local"
    embedding_base_url: str | None = None  # None: the app's
    otel: str = "auto"  # "auto" or "off"
    repeat: dict[str, int] = field(default_factory=dict)  # draws per partition (else 1)
    repeat_auto: bool = False  # draws chosen from the baseline's variance
    repeat_max: int = 5
    reducer: dict[str, str] = field(default_factory=dict)  # per partition (else mean)
    flaky: dict[str, str] = field(default_factory=dict)  # per partition (else by hardness)
    app: ClientConfig = field(default_factory=ClientConfig)
    judge: ClientConfig = field(default_factory=lambda: ClientConfig(role="judge"))
    regression: RegressionSettings = field(default_factory=lambda: RegressionSettings())
    # Each option's text as given (flag, else ini key, else default): a report records
    # them, so that llmeval gate judges it by the session's own settings.
    options: dict[str, str] = field(default_factory=dict)

    def is_hard(self, partition: str) -> bool:
        return partition in self.hard_partitions

    def minimum(self, partition: str) -> float:
        """The pass rate a partition must reach (1.0 for a hard partition)."""
        return 1.0 if self.is_hard(partition) else self.min_pass_rate.get(partition, 1.0)

    def draws(self, partition: str) -> int:
        return self.repeat.get(partition, 1)

    def reducer_of(self, partition: str) -> str:
        return self.reducer.get(partition, DEFAULT_REDUCER.get(partition, "mean"))

    def flaky_mode(self, partition: str) -> str:
        return self.flaky.get(partition, "fail" if self.is_hard(partition) else "warn")

    def describe(self) -> str:
        soft = " ".join(
            f"{p}>={self.min_pass_rate.get(p, 1.0):.0%}" for p in PARTITIONS if not self.is_hard(p)
        )
        parts = [f"hard: {' '.join(p for p in PARTITIONS if self.is_hard(p))}"]
        if soft:
            parts.append(f"soft: {soft}")
        if self.tags:
            parts.append(f"tags: {','.join(self.tags)}")
        if self.shard:
            parts.append(f"shard: {self.shard[0]}/{self.shard[1]}")
        if self.report:
            parts.append(f"report: {self.report}")
        if self.regression.baseline:
            parts.append(f"baseline: {self.regression.baseline}")
        parts.append(f"cache: {self.cache_mode} ({self.cache_dir})")
        if self.app.model:
            parts.append(f"model: {self.app.model}")
        if self.judge_models:
            parts.append(f"judges: {','.join(self.judge_models)}")
        elif self.judge.model:
            parts.append(f"judge: {self.judge.model}")
        if self.repeat_auto:
            parts.append("draws: auto")
        elif any(k > 1 for k in self.repeat.values()):
            parts.append("draws: " + " ".join(f"{p}:{k}" for p, k in self.repeat.items()))
        return ", ".join(parts)


def build(
    value: Callable[[str], str],
    location: Callable[[str], Path | None],
    *,
    rootpath: Path,
    datasets_dir: str,
) -> Settings:
    """Settings from ``value(name)`` (an option's text: the flag, else the ini key) and
    ``location(name)`` (a path option resolved where it was given); relative paths of
    the ini file are relative to ``rootpath``. Raises ConfigError naming a bad value."""
    hard = _parse_hard(value("hard_partitions"))
    minimums = dict(DEFAULT_MIN_PASS_RATE)
    minimums.update(_parse_pairs("min_pass_rate", value("min_pass_rate"), _rate, PARTITIONS))
    clash = sorted(hard & set(_keys(value("min_pass_rate"))))
    if clash:
        raise ConfigError(
            f"llmeval_min_pass_rate: {clash[0]!r} is a hard partition (every failure fails "
            f"the session); remove it from llmeval_hard_partitions to give it a minimum"
        )
    datasets_dir = datasets_dir.strip()
    cache_mode = value("cache")
    if cache_mode not in CACHE_MODES:
        raise ConfigError(
            f"llmeval_cache: unknown mode {cache_mode!r}; valid: {', '.join(CACHE_MODES)}"
        )
    otel = value("otel")
    if otel not in OTEL_MODES:
        raise ConfigError(f"llmeval_otel: unknown mode {otel!r}; valid: {', '.join(OTEL_MODES)}")
    try:
        prices = parse_prices(value("prices"))
    except ValueError as exc:
        raise ConfigError(f"llmeval_prices: {exc}") from None
    concurrency = _concurrency(value("concurrency"))
    retries = dict(
        max_retries=_count("max_retries", value("max_retries"), minimum=0),
        timeout_retries=_count("timeout_retries", value("timeout_retries"), minimum=0),
        retry_base_delay=_number("retry_base_delay", value("retry_base_delay"), minimum=0),
        prices=prices,
        # With llmeval_concurrency = auto, each endpoint's bound on requests in flight adapts
        # (up to llmeval_max_concurrency); with a number, it is that ceiling, fixed.
        adaptive=concurrency is None,
    )
    app = _client_config(value, "", os.environ.get("OPENAI_BASE_URL"), retries)
    judge_key = os.environ.get("LLMEVAL_JUDGE_API_KEY")
    judge_url = os.environ.get("LLMEVAL_JUDGE_BASE_URL") or app.base_url
    judge = _client_config(value, "judge_", judge_url, retries, api_key=judge_key)
    if judge.temperature is not None and judge.temperature > 0.3:
        raise ConfigError(
            f"llmeval_judge_temperature: {judge.temperature:g} is above 0.3: a judge's "
            "temperature must be between 0 and 0.3, so that its verdicts repeat"
        )
    return Settings(
        options={name: _recorded(name, value(name)) for name, _, _ in OPTIONS},
        report=Path(value("report")) if value("report") else None,
        html=Path(value("html")) if value("html") else None,
        markdown=Path(value("markdown")) if value("markdown") else None,
        history_dir=location("history_dir"),  # a store kept across runs, as the baseline
        junit_properties=_yes("junit_properties", value("junit_properties")),
        tags=tuple(t.strip() for t in value("tags").split(",") if t.strip()),
        shard=parse_shard(value("shard")),
        hard_partitions=hard,
        min_pass_rate=minimums,
        thresholds=_parse_pairs("thresholds", value("thresholds"), _threshold, None),
        time_budget=_parse_pairs("time_budget", value("time_budget"), _positive, PARTITIONS),
        time_budget_strict=_yes("time_budget_strict", value("time_budget_strict")),
        bar_locked=_yes("bar_locked", value("bar_locked")),
        bar_accept=frozenset(value("bar_accept").replace(",", " ").split()),
        datasets_dir=(rootpath / datasets_dir) if datasets_dir else None,
        cache_mode=cache_mode,
        cache_dir=rootpath / value("cache_dir"),
        judge_samples=_count("judge_samples", value("judge_samples"), minimum=1),
        judge_models=_judge_models(value("judge_models")),
        judge_max_tokens=_count("judge_max_tokens", value("judge_max_tokens"), minimum=1),
        max_position_bias=_rate("llmeval_max_position_bias", value("max_position_bias")),
        concurrency=concurrency,
        embedding_model=value("embedding_model").strip() or "local",
        embedding_base_url=value("embedding_base_url") or None,
        otel=otel,
        **_repeats(value),
        regression=regression_settings(value, location),
        app=app,
        judge=judge,
    )


def _recorded(name: str, text: str) -> str:
    """An option's text as a report records it: a URL without its user, password and
    query, where a key may hide."""
    if not name.endswith("base_url"):
        return text
    parts = urlsplit(text)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "", "")) if parts.netloc else text


def _client_config(
    value: Callable[[str], str],
    prefix: str,
    env_base_url: str | None,
    shared: dict[str, Any],
    *,
    api_key: str | None = None,
) -> ClientConfig:
    """One role's client settings: flag, then ini, then the environment."""
    temperature = value(f"{prefix}temperature")
    return ClientConfig(
        role="judge" if prefix else "app",
        model=value(f"{prefix}model") or None,
        base_url=value(f"{prefix}base_url") or env_base_url or None,
        api_key=api_key or os.environ.get("OPENAI_API_KEY"),
        temperature=_number(f"{prefix}temperature", temperature, minimum=0)
        if temperature
        else None,
        max_concurrency=_count(
            f"{prefix}max_concurrency", value(f"{prefix}max_concurrency"), minimum=1
        ),
        timeout=_number(f"{prefix}timeout", value(f"{prefix}timeout"), minimum=0.001),
        **shared,
    )


def regression_settings(
    value: Callable[[str], str], location: Callable[[str], Path | None]
) -> RegressionSettings:
    """The regression keys from ``value(name)`` (shared by the plugin and ``llmeval
    compare``). ConfigError names the key of a bad value."""
    gate = []
    for item in value("gate").replace(",", " ").split():
        metric, _, partition = item.partition(".")
        if metric not in GATED_METRICS:
            raise ConfigError(
                f"llmeval_gate: unknown metric {metric!r}; valid: {', '.join(GATED_METRICS)}"
            )
        if partition and partition not in PARTITIONS:
            raise ConfigError(
                f"llmeval_gate: unknown partition {partition!r}; valid: {', '.join(PARTITIONS)}"
            )
        gate.append((metric, partition or None))
    delta = dict(DEFAULT_DELTA)
    delta.update(_parse_pairs("delta", value("delta"), _delta, GATED_METRICS, "metric"))
    alpha = _number("alpha", value("alpha"), minimum=0)
    if not 0 < alpha < 1:
        raise ConfigError(f"llmeval_alpha: {alpha:g} is not between 0 and 1")
    return RegressionSettings(
        baseline=location("baseline"),
        save_baseline=location("save_baseline"),
        gate=tuple(gate),
        delta=delta,
        alpha=alpha,
        strict=_yes("strict", value("strict")),
        fails=_yes("regression_fails", value("regression_fails")),
    )


def _repeats(value: Callable[[str], str]) -> dict[str, Any]:
    """Settings' draws, reducers and flaky modes: a bare value is every partition's."""
    raw = value("repeat").strip()
    repeat_max = _count("repeat_max", value("repeat_max"), minimum=1)
    auto = raw == "auto"
    if auto or not raw:
        repeat: dict[str, int] = {}
    elif ":" not in raw:
        repeat = dict.fromkeys(PARTITIONS, _count("repeat", raw, minimum=1))
    else:
        repeat = {
            partition: _count("repeat", text, minimum=1)
            for partition, text in _words("repeat", raw, PARTITIONS).items()
        }
    return {
        "repeat": repeat,
        "repeat_auto": auto,
        "repeat_max": repeat_max,
        "reducer": _choices("reducer", value("reducer"), REDUCERS),
        "flaky": _choices("flaky", value("flaky"), FLAKY_MODES),
    }


def _choices(name: str, spec: str, valid: tuple[str, ...]) -> dict[str, str]:
    """'fail' for every partition, or 'golden:fail distribution:warn'."""
    spec = spec.strip()
    if spec and ":" not in spec:
        chosen = dict.fromkeys(PARTITIONS, spec)
    else:
        chosen = _words(name, spec, PARTITIONS)
    for choice in chosen.values():
        if choice not in valid:
            raise ConfigError(
                f"llmeval_{name}: unknown value {choice!r}; valid: {', '.join(valid)}"
            )
    return chosen


def _words(name: str, spec: str, valid: tuple[str, ...]) -> dict[str, str]:
    """'key:value key:value' with values left as text."""
    found: dict[str, str] = {}
    for item in spec.replace(",", " ").split():
        key, sep, raw = item.partition(":")
        if not sep or not key or not raw:
            raise ConfigError(f"llmeval_{name}: {item!r} is not of the form partition:value")
        if key not in valid:
            raise ConfigError(
                f"llmeval_{name}: unknown partition {key!r}; valid: {', '.join(valid)}"
            )
        found[key] = raw
    return found


def _yes(name: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("yes", "true", "1", "on"):
        return True
    if lowered in ("no", "false", "0", "off"):
        return False
    raise ConfigError(f"llmeval_{name}: {raw!r} is not yes or no")


def _number(name: str, raw: str, *, minimum: float) -> float:
    """A finite number >= ``minimum``: nan and inf would pass a comparison or fail every
    one, never what was meant."""
    try:
        number = float(raw)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number >= minimum):
        raise ConfigError(f"llmeval_{name}: {raw!r} is not a finite number >= {minimum:g}")
    return number


def _count(name: str, raw: str, *, minimum: int) -> int:
    """A whole number >= ``minimum``: 2.5 is an error, not silently 2."""
    try:
        number = int(raw)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise ConfigError(f"llmeval_{name}: {raw!r} is not a whole number >= {minimum}")
    return number


def _concurrency(raw: str) -> int | None:
    """llmeval_concurrency: 'auto' (None) or a whole number >= 1."""
    if raw.strip().lower() == "auto":
        return None
    try:
        return _count("concurrency", raw, minimum=1)
    except ConfigError:
        raise ConfigError(
            f"llmeval_concurrency: {raw!r} is not 'auto' or a whole number >= 1"
        ) from None


def _judge_models(raw: str) -> tuple[str, ...]:
    """A judge panel: two or more distinct model names, comma-separated ('' for none)."""
    if not raw.strip():
        return ()
    names = tuple(name.strip() for name in raw.split(","))
    if len(names) < 2 or len(set(names)) < len(names) or not all(names):
        raise ConfigError(
            f"llmeval_judge_models: {raw!r} is not a judge panel: name two or more distinct "
            "models, comma-separated (for one judge, set llmeval_judge_model)"
        )
    return names


def _parse_hard(spec: str) -> frozenset[str]:
    names = spec.replace(",", " ").split()
    for name in names:
        if name not in PARTITIONS:
            raise ConfigError(
                f"llmeval_hard_partitions: unknown partition {name!r}; "
                f"valid: {', '.join(PARTITIONS)}"
            )
    if "golden" not in names:
        raise ConfigError(
            "llmeval_hard_partitions must include 'golden': every golden example must pass"
        )
    return frozenset(names)


def _keys(spec: str) -> list[str]:
    return [item.partition(":")[0] for item in spec.replace(",", " ").split()]


def _parse_pairs(
    name: str,
    spec: str,
    convert: Callable[[str, str], float],
    valid: tuple[str, ...] | None,
    what: str = "partition",
) -> dict[str, float]:
    """Parse 'key:value key:value' (commas allowed as separators)."""
    pairs: dict[str, float] = {}
    for item in spec.replace(",", " ").split():
        key, sep, raw = item.partition(":")
        if not sep or not key or not raw:
            raise ConfigError(f"llmeval_{name}: {item!r} is not of the form key:value")
        if valid is not None and key not in valid:
            raise ConfigError(f"llmeval_{name}: unknown {what} {key!r}; valid: {', '.join(valid)}")
        pairs[key] = convert(f"llmeval_{name}", raw)
    return pairs


def _rate(name: str, raw: str) -> float:
    try:
        rate = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"{name}: {raw!r} is not a rate between 0 and 1 (or 0% to 100%)")
    return rate


def _threshold(name: str, raw: str) -> float:
    try:
        number = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a number") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name}: {raw!r} is not a number (it must be finite)")
    return number


def _delta(name: str, raw: str) -> float:
    number = _threshold(name, raw)
    if number <= 0:
        raise ConfigError(
            f"{name}: {raw!r} is not a positive number (δ is the smallest change that matters)"
        )
    return number


def _positive(name: str, raw: str) -> float:
    try:
        number = float(raw)
    except ValueError:
        number = float("nan")
    if not 0 < number < float("inf"):
        raise ConfigError(f"{name}: {raw!r} is not a positive number of seconds")
    return number
