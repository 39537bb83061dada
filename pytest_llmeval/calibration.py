"""Calibration: how well the automatic metrics agree with human labels.

Pure functions over plain sequences (numpy and scipy, no pytest); each returns a frozen
result whose ``to_json()`` is JSON-safe (NaN becomes ``None``). The plugin must not import
this module at start-up, since numpy and scipy are heavy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypedDict, TypeGuard, cast

import numpy as np
import numpy.typing as npt
from scipy import stats  # type: ignore[import-untyped, unused-ignore]

from .grounding import LABELS, UNSUPPORTED
from .records import ClaimEntry, RecordJSON, is_rubric

# Sentence punctuation, quotes, brackets and spaces only: "$", "%" or a leading "-" carry meaning
# ("$20", "20%", "-5") and must not make two different claims share a key.
_EDGE_CHARS = ".,;:!?\u2026\"'`\u201c\u201d\u2018\u2019\u201e\u00ab\u00bb\u2039\u203a()[]{} "


class JudgeAgreementJSON(TypedDict):
    n: int
    spearman: float | None
    spearman_p: float | None
    kappa: float | None
    mae: float | None


class ThresholdChoiceJSON(TypedDict):
    threshold: float | None
    balanced_accuracy: float | None
    tpr: float | None
    tnr: float | None
    n_good: int
    n_bad: int
    separable: bool
    note: str | None


class ClaimDetectionJSON(TypedDict):
    n: int
    tp: int
    fp: int
    fn: int
    tn: int
    precision: float | None
    recall: float | None
    f1: float | None
    agreement: float | None


class ConfiguredThreshold(TypedDict):
    threshold: float
    balanced_accuracy: float | None
    tpr: float | None
    tnr: float | None


class SimilarityCalibration(TypedDict):
    best: ThresholdChoiceJSON
    configured: ConfiguredThreshold


class _CalibrationExamples(TypedDict):
    examples: int  # the labelled examples


class CalibrationJSON(_CalibrationExamples, total=False):
    """A run's calibration (the report's ``calibration``): a section per metric the
    labelled records have, or the error that stopped it."""

    judge: JudgeAgreementJSON
    similarity: SimilarityCalibration
    retrieval_recall: SimilarityCalibration  # the same threshold question, of a retriever
    grounding: ClaimDetectionJSON
    error: str


@dataclass(frozen=True)
class JudgeAgreement:
    """A judge's scores against human ratings on the same items."""

    n: int
    spearman: float | None
    spearman_p: float | None
    kappa: float | None
    mae: float | None

    def to_json(self) -> JudgeAgreementJSON:
        return cast(JudgeAgreementJSON, _json_fields(self))


@dataclass(frozen=True)
class ThresholdChoice:
    """The similarity threshold that best separates human-labelled good and bad pairs."""

    threshold: float | None
    balanced_accuracy: float | None
    tpr: float | None
    tnr: float | None
    n_good: int
    n_bad: int
    separable: bool
    note: str | None = None

    def to_json(self) -> ThresholdChoiceJSON:
        return cast(ThresholdChoiceJSON, _json_fields(self))


@dataclass(frozen=True)
class ClaimDetection:
    """Predicted claim labels against human ones, "UNSUPPORTED" being the positive class."""

    n: int
    tp: int
    fp: int
    fn: int
    tn: int
    precision: float | None
    recall: float | None
    f1: float | None
    agreement: float | None

    def to_json(self) -> ClaimDetectionJSON:
        return cast(ClaimDetectionJSON, _json_fields(self))


def judge_agreement(
    judge: Sequence[float], human: Sequence[float], *, scale: tuple[int, int] = (1, 5)
) -> JudgeAgreement:
    """Spearman correlation, quadratic-weighted Cohen's kappa and mean absolute error.

    ``spearman`` and ``spearman_p`` are ``None`` when undefined: fewer than two items or a
    constant side (scipy would warn and return NaN); ``spearman_p`` is also ``None`` for
    two items, where scipy has no p-value. ``kappa`` compares integer categories of
    ``scale``: both sides are rounded half up and clipped to the scale first (so a judge's
    mean of several samples, or a mean of annotators, falls into a category). When the
    expected disagreement is 0 (every rating on both sides in one and the same category)
    the observed one is 0 too and kappa is 1.0, where sklearn would return NaN. ``mae``
    uses the unrounded values. Every field but ``n`` is ``None`` for empty input.
    """
    a = _floats(judge, "judge")
    b = _floats(human, "human")
    if len(a) != len(b):
        raise ValueError(f"judge has {len(a)} scores but human has {len(b)}")
    lo, hi = scale
    if lo >= hi:
        raise ValueError(f"scale must be (low, high) with low < high, got {scale}")
    n = len(a)
    if n == 0:
        return JudgeAgreement(0, None, None, None, None)
    rho, p = _spearman(a, b)
    return JudgeAgreement(
        n=n,
        spearman=rho,
        spearman_p=p,
        kappa=_quadratic_kappa(_categories(a, lo, hi), _categories(b, lo, hi), hi - lo + 1),
        mae=float(np.mean(np.abs(a - b))),
    )


def best_threshold(scores: Sequence[float], good: Sequence[bool]) -> ThresholdChoice:
    """The threshold (good when ``score >= threshold``) with the best balanced accuracy.

    Candidates are the midpoints between consecutive distinct scores, plus the adjacent
    floats just below the minimum and just above the maximum (all good / all bad, whose
    margin counts as 0). Ties in balanced accuracy go to the larger margin (distance to the
    nearest score; equal within 1e-9 times the largest absolute score, at least 1e-9, so
    that equal gaps stay equal through rounding), then to the lower threshold. With one
    class (or none) there is nothing to separate: threshold and rates are ``None`` and
    ``note`` says why.
    """
    x, is_good = _threshold_inputs(scores, good)
    n_good = int(is_good.sum())
    n_bad = len(x) - n_good
    if n_good == 0 or n_bad == 0:
        note = (
            "no labelled pairs"
            if len(x) == 0
            else f"only {'good' if n_bad == 0 else 'bad'} pairs labelled; "
            "a threshold needs both classes"
        )
        return ThresholdChoice(None, None, None, None, n_good, n_bad, False, note)

    distinct = np.unique(x)
    mids = (distinct[:-1] + distinct[1:]) / 2
    candidates = np.concatenate(
        ([np.nextafter(distinct[0], -np.inf)], mids, [np.nextafter(distinct[-1], np.inf)])
    )
    margins = np.concatenate(([0.0], np.minimum(mids - distinct[:-1], distinct[1:] - mids), [0.0]))
    tp, tn = _counts(x, is_good, candidates)
    # tp/P + tn/N compared as the integer tp*N + tn*P, so that equal balanced accuracies
    # tie exactly instead of by rounding.
    key = tp * n_bad + tn * n_good
    best = np.flatnonzero(key == key.max())
    tolerance = 1e-9 * max(1.0, float(np.abs(distinct).max()))
    best = best[margins[best] >= margins[best].max() - tolerance]
    i = int(best[np.argmin(candidates[best])])
    tpr = float(tp[i]) / n_good
    tnr = float(tn[i]) / n_bad
    return ThresholdChoice(
        threshold=float(candidates[i]),
        balanced_accuracy=(tpr + tnr) / 2,
        tpr=tpr,
        tnr=tnr,
        n_good=n_good,
        n_bad=n_bad,
        separable=bool(tp[i] == n_good and tn[i] == n_bad),
    )


def threshold_accuracy(
    scores: Sequence[float], good: Sequence[bool], threshold: float
) -> tuple[float, float, float]:
    """(balanced accuracy, TPR, TNR) when ``score >= threshold`` predicts good.

    A rate without its class (no good pairs for TPR, no bad ones for TNR) is NaN, and so is
    the balanced accuracy then.
    """
    x, is_good = _threshold_inputs(scores, good)
    n_good = int(is_good.sum())
    n_bad = len(x) - n_good
    tp, tn = _counts(x, is_good, np.array([float(threshold)]))
    tpr = float(tp[0]) / n_good if n_good else math.nan
    tnr = float(tn[0]) / n_bad if n_bad else math.nan
    return (tpr + tnr) / 2, tpr, tnr


def claim_detection(predicted: Sequence[str], human: Sequence[str]) -> ClaimDetection:
    """How well predicted claim labels catch the human-labelled hallucinations.

    ``precision`` is ``None`` when nothing was predicted UNSUPPORTED, ``recall`` when no
    claim is UNSUPPORTED by the humans; ``f1`` is 2·tp / (2·tp + fp + fn), ``None`` only
    when both are. ``agreement`` is the share of exact label matches over all four labels.
    """
    if len(predicted) != len(human):
        raise ValueError(f"predicted has {len(predicted)} labels but human has {len(human)}")
    unknown = sorted({label for label in (*predicted, *human) if label not in LABELS})
    if unknown:
        raise ValueError(f"unknown claim labels {unknown}; expected one of {list(LABELS)}")
    pairs = [(p == UNSUPPORTED, h == UNSUPPORTED) for p, h in zip(predicted, human, strict=True)]
    tp = sum(p and h for p, h in pairs)
    fp = sum(p and not h for p, h in pairs)
    fn = sum(h and not p for p, h in pairs)
    n = len(pairs)
    return ClaimDetection(
        n=n,
        tp=tp,
        fp=fp,
        fn=fn,
        tn=n - tp - fp - fn,
        precision=tp / (tp + fp) if tp + fp else None,
        recall=tp / (tp + fn) if tp + fn else None,
        f1=2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
        agreement=sum(p == h for p, h in zip(predicted, human, strict=True)) / n if n else None,
    )


def label_key(text: str) -> str:
    """The key matching a claim's text to a human-labelled claim.

    Case-folded, white space collapsed to single spaces, and sentence punctuation, quotes
    and brackets stripped from both ends (inner ones, and symbols such as ``$``, ``%`` or a
    leading ``-``, are kept): ``' "The Plan costs  $20." '`` -> ``'the plan costs $20'``.
    """
    return " ".join(text.casefold().split()).strip(_EDGE_CHARS)


def _floats(values: Sequence[float], name: str) -> npt.NDArray[np.float64]:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains a non-finite value")
    return x


def _threshold_inputs(
    scores: Sequence[float], good: Sequence[bool]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    x = _floats(scores, "scores")
    if len(x) != len(good):
        raise ValueError(f"scores has {len(x)} values but good has {len(good)}")
    return x, np.asarray(good, dtype=bool).reshape(-1)


def _counts(
    x: npt.NDArray[np.float64], is_good: npt.NDArray[np.bool_], thresholds: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """True positives and true negatives for each threshold."""
    good_sorted = np.sort(x[is_good])
    bad_sorted = np.sort(x[~is_good])
    tp = len(good_sorted) - np.searchsorted(good_sorted, thresholds, side="left")
    tn = np.searchsorted(bad_sorted, thresholds, side="left")
    return tp.astype(np.int64), tn.astype(np.int64)


def _spearman(
    a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]
) -> tuple[float | None, float | None]:
    # Checked first because scipy warns on constant input, and the suite turns warnings
    # into errors.
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None, None

    result = stats.spearmanr(a, b)
    return _finite(float(result.statistic)), _finite(float(result.pvalue))


def _categories(x: npt.NDArray[np.float64], lo: int, hi: int) -> npt.NDArray[np.int64]:
    """0-based category indices: rounded half up (not numpy's half to even), clipped."""
    return (np.clip(np.floor(x + 0.5), lo, hi) - lo).astype(np.int64)


def _quadratic_kappa(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64], k: int) -> float:
    """Cohen's kappa with quadratic weights: 1 - observed / expected weighted disagreement."""
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (a, b), 1)
    idx = np.arange(k)
    # Integer weights (i - j)**2: the usual 1 / (k - 1)**2 factor cancels in the ratio,
    # and integer sums keep "expected == 0" exact.
    weights = (idx[:, None] - idx[None, :]) ** 2
    n = len(a)
    observed = int((weights * confusion).sum()) * n
    expected = int((weights * np.outer(confusion.sum(axis=1), confusion.sum(axis=0))).sum())
    if expected == 0:
        # Both sides put every rating in one and the same category, so observed is 0 too:
        # perfect agreement.
        return 1.0
    return 1.0 - observed / expected


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _json_fields(result: JudgeAgreement | ThresholdChoice | ClaimDetection) -> dict[str, Any]:
    """The fields as JSON values: the result's ``*JSON`` TypedDict, field for field."""
    return {name: _json_value(value) for name, value in asdict(result).items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    return value


# --- from the records of a run ---------------------------------------------------------


def from_records(records: Sequence[RecordJSON]) -> CalibrationJSON | None:
    """Calibration of a run, from its records (``Record.to_json()`` or a JSON report's):
    the judge against ``human_score``, the similarity and retrieval-recall thresholds
    against ``human_labels["acceptable"]`` (or ``human_score >= 3`` when absent), the grounding
    check against ``human_labels["claims"]``. None when no record carries human labels."""
    labelled = [(r, human) for r in records if (human := r.get("human"))]
    if not labelled:
        return None
    judged: list[tuple[float, float]] = []
    # A thresholded metric's (score, acceptable by people, threshold) per labelled test.
    thresholded: dict[str, list[tuple[float, bool, float]]] = {
        "similarity": [],
        "retrieval_recall": [],
    }
    claims: list[tuple[str, str]] = []
    for record, human in labelled:
        score, labels = human.get("score"), human.get("labels") or {}
        mean = next(
            (j["mean"] for j in record.get("judge", []) if is_rubric(j) and j["mean"] is not None),
            None,
        )
        if _number(score) and mean is not None:
            judged.append((mean, score))
        good = labels.get("acceptable", score >= 3 if _number(score) else None)
        for metric in record.get("metrics", []):
            # An undefined score (null, or NaN from an older report) says nothing about
            # the threshold: left out, rather than costing the whole calibration.
            value, limit = metric["score"], metric["threshold"]
            rows = thresholded.get(metric["name"])
            if rows is not None and good is not None and _number(value) and limit is not None:
                rows.append((value, bool(good), limit))
            if metric["name"] == "grounding" and labels.get("claims"):
                found = metric["details"]["claims"]
                claims += [(_flagged(text, found), want) for text, want in labels["claims"].items()]
    result: CalibrationJSON = {"examples": len({r["example_id"] for r, _ in labelled})}
    if judged:
        judge, by_humans = zip(*judged, strict=True)
        result["judge"] = judge_agreement(judge, by_humans).to_json()
    if thresholded["similarity"]:
        result["similarity"] = _threshold_calibration(thresholded["similarity"])
    if thresholded["retrieval_recall"]:
        result["retrieval_recall"] = _threshold_calibration(thresholded["retrieval_recall"])
    if claims:
        predicted, human_labels = zip(*claims, strict=True)
        result["grounding"] = claim_detection(predicted, human_labels).to_json()
    return result


def _threshold_calibration(rows: list[tuple[float, bool, float]]) -> SimilarityCalibration:
    """The best threshold of a metric for people's verdicts, and how the configured one
    (the first test's) does."""
    scores, good, limits = zip(*rows, strict=True)
    configured = limits[0]
    balanced, tpr, tnr = threshold_accuracy(scores, good, configured)
    return {
        "best": best_threshold(scores, good).to_json(),
        "configured": {
            "threshold": configured,
            "balanced_accuracy": _finite(balanced),
            "tpr": _finite(tpr),
            "tnr": _finite(tnr),
        },
    }


def _number(value: object) -> TypeGuard[float]:
    """A finite number (a JSON null, NaN or a bool is not a score)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _flagged(text: str, found: Sequence[ClaimEntry]) -> str:
    """The checker's label for a human-labelled claim: the label of the claims that state
    it (equal, or containing it), UNSUPPORTED if any of them is. A claim the checker did
    not mention was not flagged, which counts as SUPPORTED."""
    key = label_key(text)
    matches = [c["label"] for c in found if key in label_key(c["text"])]
    if UNSUPPORTED in matches:
        return UNSUPPORTED
    return matches[0] if matches else "SUPPORTED"


def summary_lines(calibration: CalibrationJSON) -> list[str]:
    """The calibration section of the summary and of ``llmeval calibrate``."""
    lines = [f"calibration against human labels ({calibration['examples']} labelled examples):"]
    if "error" in calibration:
        return [*lines, f"  could not be computed: {calibration['error']}"]
    judge = calibration.get("judge")
    if judge:
        lines.append(
            f"  judge vs human scores (n={judge['n']}): Spearman {_fmt(judge['spearman'])}"
            f" (p {_fmt(judge['spearman_p'], 3)}), weighted kappa {_fmt(judge['kappa'])}, "
            f"mean absolute error {_fmt(judge['mae'])}"
        )
    for name, unit, section in (
        ("similarity", "pairs", calibration.get("similarity")),
        ("retrieval recall", "tests", calibration.get("retrieval_recall")),
    ):
        if not section:
            continue
        best, configured = section["best"], section["configured"]
        if best["threshold"] is None:
            lines.append(f"  {name}: {best['note']}")
        else:
            lines.append(
                f"  {name} ({best['n_good']} good, {best['n_bad']} bad {unit}): best "
                f"threshold {best['threshold']:.3f}, balanced accuracy "
                f"{_fmt(best['balanced_accuracy'])}"
                f"{'' if best['separable'] else ' (no threshold separates them)'}; "
                f"the configured {configured['threshold']:.2f} gives "
                f"{_fmt(configured['balanced_accuracy'])}"
            )
    grounding = calibration.get("grounding")
    if grounding:
        caught, missed = grounding["tp"], grounding["fn"]
        lines.append(
            f"  grounding on {grounding['n']} labelled claims: precision "
            f"{_fmt(grounding['precision'])}, recall {_fmt(grounding['recall'])} "
            f"({caught} of {caught + missed} unsupported claims caught, "
            f"{grounding['fp']} false alarms)"
        )
    return lines


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
