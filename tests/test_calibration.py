"""Agreement of the automatic metrics with human labels, checked by hand and independently."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from scipy import stats  # type: ignore[import-untyped, unused-ignore]

from pytest_llmeval.calibration import (
    ClaimDetection,
    JudgeAgreement,
    ThresholdChoice,
    best_threshold,
    claim_detection,
    judge_agreement,
    label_key,
    threshold_accuracy,
)

S, U, N, R = "SUPPORTED", "UNSUPPORTED", "NOT_CHECKABLE", "REASONABLE_INFERENCE"


@pytest.fixture(autouse=True)
def no_warnings() -> Iterator[None]:
    """The suite's filterwarnings = error covers this too; kept so a run without it still
    fails on a warning from scipy or numpy."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def round_trip(result: JudgeAgreement | ThresholdChoice | ClaimDetection) -> dict[str, Any]:
    doc = result.to_json()
    assert json.loads(json.dumps(doc, allow_nan=False)) == doc
    return doc


# --- judge_agreement ------------------------------------------------------------------


def kappa_double_loop(a: Sequence[int], b: Sequence[int], lo: int, hi: int) -> float:
    """Quadratic kappa from its definition, one cell at a time."""
    k = hi - lo + 1
    n = len(a)
    observed = [[0.0] * k for _ in range(k)]
    for x, y in zip(a, b, strict=True):
        observed[x - lo][y - lo] += 1 / n
    rows = [sum(observed[i]) for i in range(k)]
    cols = [sum(observed[i][j] for i in range(k)) for j in range(k)]
    num = den = 0.0
    for i in range(k):
        for j in range(k):
            w = (i - j) ** 2 / (k - 1) ** 2
            num += w * observed[i][j]
            den += w * rows[i] * cols[j]
    return 1 - num / den


def kappa_sklearn_formula(a: Sequence[int], b: Sequence[int], lo: int, hi: int) -> float:
    """sklearn.metrics.cohen_kappa_score(a, b, labels=range(lo, hi + 1), weights="quadratic"),
    written out (sklearn is not a dependency)."""
    labels = list(range(lo, hi + 1))
    n_classes = len(labels)
    confusion = np.zeros((n_classes, n_classes))
    for x, y in zip(a, b, strict=True):
        confusion[labels.index(x), labels.index(y)] += 1
    sum0 = np.sum(confusion, axis=0)
    sum1 = np.sum(confusion, axis=1)
    expected = np.outer(sum0, sum1) / np.sum(sum0)
    w_mat = np.zeros([n_classes, n_classes], dtype=int)
    w_mat += np.arange(n_classes)
    w_mat = (w_mat - w_mat.T) ** 2
    k = np.sum(w_mat * confusion) / np.sum(w_mat * expected)
    return float(1 - k)


def test_judge_agreement_hand_computed() -> None:
    # Scale (1, 3). Judge means round half up, then clip: 0.6 -> 1, 2.4 -> 2, 2.5 -> 3
    # (numpy's half-to-even would give 2), 3.7 -> 4 -> 3. Human: 1, 3, 3, 2.
    # Pairs (judge, human): (1,1) (2,3) (3,3) (3,2); quadratic weights (i-j)^2 (the 1/(k-1)^2
    # factor cancels). Observed: (0 + 1 + 0 + 1) / 4 = 0.5.
    # Marginals: judge [1, 1, 2], human [1, 1, 2]. Expected: sum r_i c_j (i-j)^2 / 16 =
    # (1*1*1 + 1*2*4 + 1*1*1 + 1*2*1 + 2*1*4 + 2*1*1) / 16 = 22/16.
    # kappa = 1 - 0.5 / (22/16) = 1 - 8/22 = 7/11.
    # MAE of unrounded values: (0.4 + 0.6 + 0.5 + 1.7) / 4 = 0.8.
    judge, human = [0.6, 2.4, 2.5, 3.7], [1, 3, 3, 2]
    result = judge_agreement(judge, human, scale=(1, 3))
    assert result.n == 4
    assert result.kappa == pytest.approx(7 / 11)
    assert result.kappa == pytest.approx(kappa_double_loop([1, 2, 3, 3], human, 1, 3))
    assert result.kappa == pytest.approx(kappa_sklearn_formula([1, 2, 3, 3], human, 1, 3))
    assert result.mae == pytest.approx(0.8)
    expected = stats.spearmanr(judge, human)
    assert result.spearman == pytest.approx(expected.statistic)
    assert result.spearman_p == pytest.approx(expected.pvalue)


@pytest.mark.parametrize("seed", range(20))
def test_judge_agreement_matches_independent_computations(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 40))
    human = rng.integers(1, 6, size=n).tolist()
    judge = np.clip(np.array(human) + rng.integers(-2, 3, size=n), 1, 5).tolist()
    assert len(set(judge)) > 1 and len(set(human)) > 1  # these seeds draw no constant side
    result = judge_agreement(judge, human)
    assert result.kappa == pytest.approx(kappa_double_loop(judge, human, 1, 5))
    assert result.kappa == pytest.approx(kappa_sklearn_formula(judge, human, 1, 5))
    expected = stats.spearmanr(judge, human)
    assert result.spearman == pytest.approx(expected.statistic)
    assert result.spearman_p == pytest.approx(expected.pvalue)
    assert result.mae == pytest.approx(np.mean(np.abs(np.array(judge) - np.array(human))))


def test_judge_agreement_perfect() -> None:
    result = judge_agreement([1, 2, 3, 4, 5], [1, 2, 3, 4, 5])
    assert result.spearman == pytest.approx(1.0)
    assert result.kappa == 1.0
    assert result.mae == 0.0
    assert round_trip(result)["kappa"] == 1.0


def test_judge_agreement_total_disagreement() -> None:
    # Categories 1 and 5 swapped: observed (5-1)^2 = 16 on every pair; marginals [2, 0, 0, 0, 2]
    # both sides, expected (2*2*16 + 2*2*16) / 16 = 8; kappa = 1 - 16/8 = -1.
    result = judge_agreement([1, 5, 1, 5], [5, 1, 5, 1])
    assert result.kappa == pytest.approx(-1.0)
    assert result.kappa == pytest.approx(kappa_double_loop([1, 5, 1, 5], [5, 1, 5, 1], 1, 5))
    assert result.spearman == pytest.approx(-1.0)
    assert result.mae == 4.0


def test_judge_agreement_constant_judge() -> None:
    # Judge always 3, human 1, 2, 3: observed (4 + 1 + 0) / 3; expected the same, since the
    # judge's marginal sits on one category: 3 * (4 + 1 + 0) / 9. kappa = 0. No Spearman.
    result = judge_agreement([3, 3, 3], [1, 2, 3])
    assert result.spearman is None
    assert result.spearman_p is None
    assert result.kappa == pytest.approx(0.0)
    assert result.mae == pytest.approx(1.0)
    assert round_trip(result)["spearman"] is None


def test_judge_agreement_both_constant() -> None:
    # Expected disagreement 0 (everything in one category): defined as kappa 1.0.
    same = judge_agreement([4, 4, 4], [4.2, 3.9, 4.0])
    assert (same.spearman, same.kappa) == (None, 1.0)
    assert same.mae == pytest.approx(0.1)
    # Both constant but in different categories: observed == expected, kappa 0.
    apart = judge_agreement([2, 2], [4, 4])
    assert (apart.spearman, apart.kappa, apart.mae) == (None, 0.0, 2.0)


def test_judge_agreement_small_inputs() -> None:
    assert judge_agreement([], []) == JudgeAgreement(0, None, None, None, None)
    one = judge_agreement([3], [3])
    assert (one.n, one.spearman, one.spearman_p, one.kappa, one.mae) == (1, None, None, 1.0, 0.0)
    # Two items: scipy gives rho but no p-value.
    two = judge_agreement([1, 2], [2, 4])
    assert two.spearman == pytest.approx(1.0)
    assert two.spearman_p is None
    round_trip(two)


def test_judge_agreement_clips_to_scale() -> None:
    # 0.2 -> 0 -> clipped to 1; 7 -> 5: perfect agreement on the scale.
    assert judge_agreement([0.2, 7.0], [1, 5]).kappa == 1.0


def test_judge_agreement_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="3 scores but human has 2"):
        judge_agreement([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="low < high"):
        judge_agreement([1], [1], scale=(3, 3))
    with pytest.raises(ValueError, match="non-finite"):
        judge_agreement([1, math.nan], [1, 2])


# --- best_threshold / threshold_accuracy ------------------------------------------------


HAND_SCORES = [0.1, 0.3, 0.5, 0.7, 0.9]
HAND_GOOD = [False, False, True, False, True]


def test_best_threshold_hand_computed() -> None:
    # 2 good (0.5, 0.9), 3 bad (0.1, 0.3, 0.7). BA = (tp/2 + tn/3) / 2 per candidate:
    #   below 0.1: tp 2, tn 0 -> 1/2       0.2: tp 2, tn 1 -> 2/3
    #   0.4:       tp 2, tn 2 -> 5/6       0.6: tp 1, tn 2 -> 7/12
    #   0.8:       tp 1, tn 3 -> 3/4       above 0.9: tp 0, tn 3 -> 1/2
    result = best_threshold(HAND_SCORES, HAND_GOOD)
    assert result.threshold == pytest.approx(0.4)
    assert result.balanced_accuracy == pytest.approx(5 / 6)
    assert result.tpr == 1.0
    assert result.tnr == pytest.approx(2 / 3)
    assert (result.n_good, result.n_bad, result.separable, result.note) == (2, 3, False, None)
    assert round_trip(result)["threshold"] == pytest.approx(0.4)


def test_threshold_accuracy_hand_computed() -> None:
    # Same table as above; a score equal to the threshold counts as good (0.5 >= 0.5).
    assert threshold_accuracy(HAND_SCORES, HAND_GOOD, 0.4) == pytest.approx((5 / 6, 1, 2 / 3))
    assert threshold_accuracy(HAND_SCORES, HAND_GOOD, 0.5) == pytest.approx((5 / 6, 1, 2 / 3))
    assert threshold_accuracy(HAND_SCORES, HAND_GOOD, 0.8) == pytest.approx((3 / 4, 1 / 2, 1))
    assert threshold_accuracy(HAND_SCORES, HAND_GOOD, 2.0) == pytest.approx((1 / 2, 0, 1))


def test_best_threshold_separable() -> None:
    result = best_threshold([0.9, 0.2, 0.7, 0.4], [True, False, True, False])
    assert result.threshold == pytest.approx(0.55)
    assert (result.balanced_accuracy, result.tpr, result.tnr, result.separable) == (
        1.0,
        1.0,
        1.0,
        True,
    )


def test_best_threshold_total_disagreement() -> None:
    # Good pairs score lower than bad ones: nothing beats chance, and the tie between the
    # all-good and all-bad ends (both margin 0) goes to the lower threshold.
    result = best_threshold([0.1, 0.2, 0.8, 0.9], [True, True, False, False])
    assert result.balanced_accuracy == 0.5
    assert result.threshold is not None
    assert result.threshold < 0.1
    assert (result.tpr, result.tnr, result.separable) == (1.0, 0.0, False)


def test_best_threshold_tie_goes_to_larger_margin() -> None:
    # Scores 0, 1, 2, 4; good at 1 and 4. Both 0.5 (tp 2, tn 1; margin 0.5) and 3 (tp 1,
    # tn 2; margin 1) give BA 3/4. The larger margin picks 3 over the lower 0.5.
    result = best_threshold([0, 1, 2, 4], [False, True, False, True])
    assert (result.threshold, result.balanced_accuracy) == (3.0, 0.75)


def test_best_threshold_tie_goes_to_lower_threshold() -> None:
    # Scores 0, 2, 3, 5; good at 2 and 5. Candidates 1 and 4 both have BA 3/4 and margin 1.
    result = best_threshold([0, 2, 3, 5], [False, True, False, True])
    assert (result.threshold, result.balanced_accuracy) == (1.0, 0.75)


def test_best_threshold_margin_tie_ignores_rounding() -> None:
    # Equal gaps of 0.1: margins 0.05000000000000002 (at 0.15) and 0.050000000000000044
    # (at 0.35) are the same margin, so the lower threshold wins.
    result = best_threshold([0.1, 0.2, 0.3, 0.4], [False, True, False, True])
    assert result.threshold == pytest.approx(0.15)


def test_best_threshold_all_scores_equal() -> None:
    result = best_threshold([0.5, 0.5], [True, False])
    assert result.threshold is not None
    assert result.threshold < 0.5
    assert (result.balanced_accuracy, result.separable) == (0.5, False)


@pytest.mark.parametrize("good", [[True, True], [False, False, False]])
def test_best_threshold_one_class(good: list[bool]) -> None:
    result = best_threshold([0.4, 0.6, 0.8][: len(good)], good)
    assert result.threshold is None
    assert result.balanced_accuracy is None
    assert (result.tpr, result.tnr, result.separable) == (None, None, False)
    assert result.note is not None
    assert ("only good" if good[0] else "only bad") in result.note
    assert round_trip(result)["threshold"] is None


def test_best_threshold_empty() -> None:
    result = best_threshold([], [])
    assert (result.threshold, result.n_good, result.n_bad) == (None, 0, 0)
    assert result.note == "no labelled pairs"


def test_threshold_accuracy_one_class_is_nan() -> None:
    ba, tpr, tnr = threshold_accuracy([0.4, 0.6], [True, True], 0.5)
    assert tpr == 0.5
    assert math.isnan(tnr)
    assert math.isnan(ba)


def test_threshold_inputs_rejected() -> None:
    with pytest.raises(ValueError, match="2 values but good has 1"):
        best_threshold([0.1, 0.2], [True])
    with pytest.raises(ValueError, match="2 values but good has 3"):
        threshold_accuracy([0.1, 0.2], [True, False, True], 0.5)
    with pytest.raises(ValueError, match="non-finite"):
        best_threshold([0.1, math.inf], [True, False])


@pytest.mark.parametrize("seed", range(20))
def test_best_threshold_is_best_by_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 30))
    scores = np.round(rng.random(n), 1).tolist()  # rounded: repeated scores and ties
    good = (rng.random(n) < 0.5).tolist()
    if all(good) or not any(good):
        good[0] = not good[0]
    result = best_threshold(scores, good)
    assert result.threshold is not None
    ba, tpr, tnr = threshold_accuracy(scores, good, result.threshold)
    assert (result.balanced_accuracy, result.tpr, result.tnr) == (ba, tpr, tnr)
    for t in [*scores, min(scores) - 1, max(scores) + 1]:
        assert threshold_accuracy(scores, good, t)[0] <= ba + 1e-12
    assert result.separable == (ba == 1.0)


# --- claim_detection --------------------------------------------------------------------


def test_claim_detection_hand_computed() -> None:
    # idx  predicted  human   -> confusion for UNSUPPORTED     exact match
    #  0   U          U          tp                             yes
    #  1   U          S          fp                             no
    #  2   U          S          fp                             no
    #  3   S          U          fn                             no
    #  4   N          N          tn                             yes
    #  5   R          R          tn                             yes
    #  6   S          S          tn                             yes
    # precision 1/3, recall 1/2, F1 2*1 / (2*1 + 2 + 1) = 0.4, agreement 4/7.
    result = claim_detection([U, U, U, S, N, R, S], [U, S, S, U, N, R, S])
    assert (result.n, result.tp, result.fp, result.fn, result.tn) == (7, 1, 2, 1, 3)
    assert result.precision == pytest.approx(1 / 3)
    assert result.recall == pytest.approx(1 / 2)
    assert result.f1 == pytest.approx(0.4)
    assert result.agreement == pytest.approx(4 / 7)
    assert round_trip(result)["tp"] == 1


def test_claim_detection_perfect() -> None:
    labels = [U, S, N, R, U]
    result = claim_detection(labels, labels)
    assert (result.precision, result.recall, result.f1, result.agreement) == (1.0, 1.0, 1.0, 1.0)


def test_claim_detection_total_disagreement() -> None:
    result = claim_detection([U, U, S], [S, R, U])
    assert (result.tp, result.fp, result.fn, result.tn) == (0, 2, 1, 0)
    assert (result.precision, result.recall, result.f1, result.agreement) == (0.0, 0.0, 0.0, 0.0)


def test_claim_detection_undefined_rates() -> None:
    # Nothing predicted positive: no precision; recall 0 and F1 0 since humans found one.
    missed = claim_detection([S, S], [U, S])
    assert (missed.precision, missed.recall, missed.f1) == (None, 0.0, 0.0)
    # No positives anywhere: nothing to measure.
    clean = claim_detection([S, N], [S, R])
    assert (clean.precision, clean.recall, clean.f1, clean.agreement) == (None, None, None, 0.5)
    assert round_trip(clean)["precision"] is None
    empty = claim_detection([], [])
    assert (empty.n, empty.agreement) == (0, None)


def test_claim_detection_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="2 labels but human has 1"):
        claim_detection([S, U], [S])
    with pytest.raises(ValueError, match="unknown claim labels \\['supported'\\]"):
        claim_detection(["supported"], [S])


# --- label_key and to_json --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (' "The Plan  costs\n$20." ', "the plan costs $20"),
        ("\u201cRefunds take 5 days.\u201d", "refunds take 5 days"),
        ("(Discount is 20%)", "discount is 20%"),
        ("-5 degrees!", "-5 degrees"),
        ("It's the v2.1 API...", "it's the v2.1 api"),
        ("  ", ""),
    ],
)
def test_label_key(text: str, key: str) -> None:
    assert label_key(text) == key


def test_label_key_matches_variants() -> None:
    assert label_key("The price is $19.99.") == label_key("  the PRICE is   $19.99 ")


def test_to_json_turns_nan_into_none() -> None:
    result = JudgeAgreement(2, math.nan, math.nan, math.inf, 0.5)
    assert round_trip(result) == {
        "n": 2,
        "spearman": None,
        "spearman_p": None,
        "kappa": None,
        "mae": 0.5,
    }
    assert all(type(v) in (int, float, type(None)) for v in round_trip(result).values())


def test_to_json_values_are_plain_python() -> None:
    doc = round_trip(best_threshold(HAND_SCORES, HAND_GOOD))
    assert {k: type(v).__name__ for k, v in doc.items()} == {
        "threshold": "float",
        "balanced_accuracy": "float",
        "tpr": "float",
        "tnr": "float",
        "n_good": "int",
        "n_bad": "int",
        "separable": "bool",
        "note": "NoneType",
    }


def test_an_undefined_similarity_score_is_left_out_not_fatal() -> None:
    """A record whose similarity is null (or NaN, in a report written before NaN became
    null) carries no information on the threshold; the others are still calibrated."""
    from pytest_llmeval.calibration import from_records

    def record(i: int, score: float | None, human: float | None) -> dict[str, Any]:
        metric: dict[str, Any] = {
            "name": "similarity",
            "score": score,
            "threshold": 0.85,
            "details": {},
        }
        return {"example_id": f"e{i}", "human": {"score": human}, "metrics": [metric]}

    scored = [(0.9, 4), (0.95, 5), (0.3, 1), (0.5, 2)]
    base = [record(i, score, human) for i, (score, human) in enumerate(scored)]
    expected = from_records(base)
    assert expected is not None and expected["similarity"]["best"]["threshold"] == 0.7
    undefined = [record(8, None, 4.0), record(9, math.nan, 1.0), record(10, 0.2, math.nan)]
    result = from_records(base + undefined)
    assert result is not None and "error" not in result
    assert result["similarity"] == expected["similarity"] and result["examples"] == 7
    json.dumps(result, allow_nan=False)


def test_retrieval_recall_is_calibrated_against_acceptable_answers() -> None:
    """People's verdict on each answer (``acceptable``) against the retriever's recall:
    the threshold that separates them, and the configured one's accuracy."""
    from pytest_llmeval.calibration import from_records, summary_lines

    def record(i: int, recall: float, acceptable: bool) -> dict[str, Any]:
        metric = {"name": "retrieval_recall", "score": recall, "threshold": 0.8, "details": {}}
        labels = {"score": None, "labels": {"acceptable": acceptable}}
        return {"example_id": f"e{i}", "human": labels, "metrics": [metric]}

    labelled = [(1.0, True), (0.5, True), (0.5, False), (0.0, False), (1.0, True)]
    result = from_records([record(i, r, a) for i, (r, a) in enumerate(labelled)])
    assert result is not None and "similarity" not in result
    section = result["retrieval_recall"]
    # At 0.5, 3 of 3 good accepted and 1 of 2 bad rejected: (1 + 1/2) / 2 = 0.75. Above
    # 0.5 (the configured 0.8 too), 2 of 3 good and 2 of 2 bad: (2/3 + 1) / 2, the best.
    assert section["best"]["balanced_accuracy"] == pytest.approx(5 / 6)
    assert 0.5 < section["best"]["threshold"] <= 1.0  # type: ignore[operator]
    assert section["configured"]["balanced_accuracy"] == pytest.approx(5 / 6)
    (line,) = [x for x in summary_lines(result) if "retrieval recall" in x]
    assert line.startswith("  retrieval recall (3 good, 2 bad tests): best threshold ")
