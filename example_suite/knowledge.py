"""The assistant's retriever: the knowledge base in chunks, searched with BM25.

Each heading of ``knowledge_base.md`` (``##`` sections, and ``###`` subsections under
Troubleshooting) starts a chunk; its id is the heading as a slug (``cancellation-and-
refunds``, ``sso-login``), stable across edits of the text, so datasets can name the
chunks a question needs (``relevant_ids``). BM25 in pure Python, not the local embedding
model: the questions are short and share their key words with the chunk that answers
them (plan names, "refund", "SSO"), the ranking is exact and the same on every machine,
and every test that asks the app a question retrieves, so a model would cost each run
(and each xdist worker) the import of torch.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from pytest_llmeval import traced

KNOWLEDGE_BASE = (Path(__file__).parent / "knowledge_base.md").read_text(encoding="utf-8")

# Words that say nothing about what a question is about.
# fmt: off
STOPWORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from",
    "has", "have", "how", "i", "if", "in", "is", "it", "its", "me", "my", "of", "on", "or",
    "our", "so", "that", "the", "their", "there", "this", "to", "was", "we", "what", "when",
    "where", "which", "who", "why", "will", "with", "you", "your",
})
# fmt: on


class Passage(TypedDict):
    """A retrieved chunk, as the trajectory records it: id, BM25 score, text."""

    id: str
    score: float
    text: str


@dataclass(frozen=True)
class Chunk:
    id: str
    text: str


def chunks(markdown: str = KNOWLEDGE_BASE) -> list[Chunk]:
    """The knowledge base split at its headings; a subsection's text starts with its
    section's heading too, so "Troubleshooting" finds them."""
    found: list[Chunk] = []
    section = ""
    heading, lines = "about-brightdesk", []
    for line in [*markdown.splitlines(), "## end"]:
        match = re.match(r"(#{1,3}) (.*)", line)
        if not match:
            lines.append(line)
            continue
        body = "\n".join(lines).strip()
        if body and "\n" in body:  # a heading with text under it, not only its title
            found.append(Chunk(heading, body))
        level, title = len(match.group(1)), match.group(2).strip()
        if level == 2:
            section = title
        heading = slug(title) if level > 1 else "about-brightdesk"
        lines = [f"{section}: {title}" if level == 3 else title]
    return found


def slug(title: str) -> str:
    return "-".join(re.findall(r"[a-z0-9]+", title.lower()))


def words(text: str) -> list[str]:
    """Lower-cased words and numbers, without stopwords; a trailing "s" dropped, so that
    "refunds" finds "refund" (a stemmer's first rule, enough for this page)."""
    tokens = re.findall(r"[a-z0-9]+", text.lower())
    return [t[:-1] if len(t) > 3 and t.endswith("s") else t for t in tokens if t not in STOPWORDS]


class BM25:
    """Okapi BM25 (k1 = 1.2, b = 0.75) over the chunks, Lucene's idf (never negative)."""

    def __init__(self, docs: list[Chunk], k1: float = 1.2, b: float = 0.75) -> None:
        self.docs = docs
        self.k1, self.b = k1, b
        self.terms = [Counter(words(d.text)) for d in docs]
        self.lengths = [sum(t.values()) for t in self.terms]
        self.average = sum(self.lengths) / len(docs)
        frequency = Counter(term for terms in self.terms for term in terms)
        n = len(docs)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in frequency.items()}

    def scores(self, query: str) -> list[float]:
        wanted = set(words(query))
        result = []
        for terms, length in zip(self.terms, self.lengths, strict=True):
            norm = self.k1 * (1 - self.b + self.b * length / self.average)
            result.append(
                sum(
                    self.idf[t] * terms[t] * (self.k1 + 1) / (terms[t] + norm)
                    for t in wanted
                    if t in terms
                )
            )
        return result

    def top(self, query: str, k: int) -> list[Passage]:
        """The ``k`` best chunks with a score above 0, best first (ties by page order)."""
        ranked = sorted(enumerate(self.scores(query)), key=lambda pair: (-pair[1], pair[0]))
        return [
            Passage(id=self.docs[i].id, score=round(score, 3), text=self.docs[i].text)
            for i, score in ranked[:k]
            if score > 0
        ]


INDEX = BM25(chunks())


@traced(kind="retrieval")
def search(query: str, k: int = 3) -> list[Passage]:
    """The knowledge base's ``k`` best chunks for ``query``: a retrieval step of the
    running eval test's trajectory (ids and scores), outside tests a plain function."""
    return INDEX.top(query, k)
