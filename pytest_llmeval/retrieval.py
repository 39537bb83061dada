"""Ranking metrics of a retriever's results against the documents it should return.

``relevant`` is a collection of ids (each of grade 1) or a mapping of id to a graded
relevance (0 is not relevant). All four metrics look at the top ``k`` results:

- recall@k: the share of the relevant documents found in the top k;
- precision@k: the share of the top k that is relevant (divided by k, as in trec_eval,
  so fewer than k results count the missing ones as not relevant);
- MRR@k: 1 / the rank of the first relevant result, 0 when none is in the top k;
- nDCG@k: the discounted cumulative gain ``sum(grade_i / log2(i + 1))`` over ranks
  i = 1..k, divided by that of the ideal ranking (trec_eval's and scikit-learn's linear
  gain); an id returned twice counts at its first rank only, its repeat taking a rank
  and gaining nothing.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RetrievalScores:
    k: int
    recall: float
    precision: float
    mrr: float
    ndcg: float
    found: tuple[str, ...]  # the relevant ids in the top k, in rank order
    missed: tuple[str, ...]  # the relevant ids not in the top k

    def as_dict(self) -> dict[str, float]:
        return {
            "recall": self.recall,
            "precision": self.precision,
            "mrr": self.mrr,
            "ndcg": self.ndcg,
        }


def grades(relevant: Collection[str] | Mapping[str, float]) -> dict[str, float]:
    """Each relevant id's grade (a plain collection: all 1)."""
    if isinstance(relevant, Mapping):
        graded = {str(k): float(v) for k, v in relevant.items()}
    else:
        graded = {str(k): 1.0 for k in relevant}
    if not any(g > 0 for g in graded.values()):
        raise ValueError("retrieval metrics need at least one relevant id (grade above 0)")
    if any(g < 0 or not math.isfinite(g) for g in graded.values()):
        raise ValueError(f"relevance grades must be finite and at least 0: {graded}")
    return graded


def score_ranking(
    ranked: Sequence[str], relevant: Collection[str] | Mapping[str, float], k: int
) -> RetrievalScores:
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    graded = grades(relevant)
    # The top k as returned: a repeat keeps its rank, and gains nothing.
    top = [str(doc) for doc in ranked[:k]]
    gains = [graded.get(doc, 0.0) if doc not in top[:i] else 0.0 for i, doc in enumerate(top)]
    top = list(dict.fromkeys(top))
    wanted = {doc for doc, g in graded.items() if g > 0}
    found = tuple(doc for doc in top if doc in wanted)
    first = next((rank for rank, gain in enumerate(gains, 1) if gain > 0), None)
    ideal = sorted((g for g in graded.values() if g > 0), reverse=True)[:k]
    return RetrievalScores(
        k=k,
        recall=len(found) / len(wanted),
        precision=len(found) / k,
        mrr=1.0 / first if first else 0.0,
        ndcg=_dcg(gains) / _dcg(ideal),
        found=found,
        missed=tuple(doc for doc in graded if graded[doc] > 0 and doc not in found),
    )


def _dcg(gains: Sequence[float]) -> float:
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, 1))
