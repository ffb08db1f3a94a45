"""Label unification (UniMSE): every training sample gets all four universal-label fields.

A field a dataset does not annotate is borrowed from the most similar training sample of another
dataset with the same polarity (cosine similarity of MiniLM sentence embeddings); neutral samples
get score 0.0 and emotion ``neutral``. Only training splits are matched, against training splits
(the original code also matched against test splits: a leak). Embeddings are cached on disk.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from train.data import Sample
from unimse.labels import UniversalLabel

logger = logging.getLogger(__name__)

DEFAULT_CACHE = Path.home() / ".cache" / "emotrack"


@dataclass(frozen=True)
class UnifiedSample:
    sample: Sample
    polarity: str
    score: float
    meld_emotion: str
    iemocap_emotion: str
    borrowed: frozenset[str]  # which of score / meld_emotion / iemocap_emotion were borrowed

    @classmethod
    def from_label(
        cls, sample: Sample, label: UniversalLabel, derived: frozenset[str]
    ) -> UnifiedSample:
        """A sample whose every field comes from ``label``; ``derived`` ones train as borrowed."""
        return cls(
            sample, label.polarity, label.score, label.meld_emotion, label.iemocap_emotion, derived
        )


def embed_texts(texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """L2-normalised mean-pooled all-MiniLM-L6-v2 sentence embeddings (the bundled model)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from unimse.backbones import resolve_backbone

    source = resolve_backbone("minilm")
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    model = AutoModel.from_pretrained(source, local_files_only=True).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(
                list(texts[i : i + batch_size]),
                padding=True,
                truncation=True,
                max_length=64,
                return_tensors="pt",
            )
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 384), np.float32)


def cached_embeddings(texts: Sequence[str], cache_dir: Path = DEFAULT_CACHE) -> np.ndarray:
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = cache_dir / f"minilm-embeddings-{key}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    logger.info("embedding %d texts for label unification (cached at %s)", len(texts), path)
    emb = embed_texts(texts)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, emb)
    return emb


def nearest_same_polarity(
    query: np.ndarray, query_pol: Sequence[str], pool: np.ndarray, pool_pol: Sequence[str]
) -> np.ndarray:
    """Index into ``pool`` of each query's most similar row with the same polarity (-1: none)."""
    result = np.full(len(query), -1, dtype=np.int64)
    pool_pol_arr = np.asarray(pool_pol)
    query_pol_arr = np.asarray(query_pol)
    for polarity in np.unique(query_pol_arr):
        q_idx = np.nonzero(query_pol_arr == polarity)[0]
        p_idx = np.nonzero(pool_pol_arr == polarity)[0]
        if len(p_idx) == 0:
            continue
        sims = query[q_idx] @ pool[p_idx].T
        result[q_idx] = p_idx[sims.argmax(axis=1)]
    return result


def unify(
    samples: Sequence[Sample],
    embeddings: np.ndarray | None = None,
    cache_dir: Path = DEFAULT_CACHE,
) -> list[UnifiedSample]:
    """Fill every sample's missing fields from the other datasets' training samples."""
    if any(s.split != "train" for s in samples):
        raise ValueError("label unification uses training samples only")
    if embeddings is None:
        embeddings = cached_embeddings([s.text for s in samples], cache_dir)
    polarity = [s.polarity or "neutral" for s in samples]
    result = [
        UnifiedSample(
            s,
            polarity[i],
            s.score if s.score is not None else 0.0,
            s.meld_emotion or "neutral",
            s.iemocap_emotion or "neutral",
            frozenset(),
        )
        for i, s in enumerate(samples)
    ]
    donors = {
        "score": [i for i, s in enumerate(samples) if s.score is not None],
        "meld_emotion": [i for i, s in enumerate(samples) if s.meld_emotion is not None],
        "iemocap_emotion": [i for i, s in enumerate(samples) if s.iemocap_emotion is not None],
    }
    for field_name, donor_idx in donors.items():
        need = [i for i, s in enumerate(samples) if getattr(s, field_name) is None]
        if not need:
            continue
        borrowed = frozenset({field_name})
        to_match = [i for i in need if polarity[i] != "neutral"]
        for i in need:  # neutral: fixed values, still marked as not gold
            if polarity[i] == "neutral":
                result[i] = replace(result[i], borrowed=result[i].borrowed | borrowed)
        if not donor_idx or not to_match:
            continue
        nn = nearest_same_polarity(
            embeddings[to_match],
            [polarity[i] for i in to_match],
            embeddings[donor_idx],
            [polarity[i] for i in donor_idx],
        )
        for i, j in zip(to_match, nn, strict=True):
            if j < 0:
                continue
            value = getattr(samples[donor_idx[j]], field_name)
            result[i] = replace(
                result[i], **{field_name: value}, borrowed=result[i].borrowed | borrowed
            )
    counts = {f: sum(f in r.borrowed for r in result) for f in donors}
    logger.info("label unification borrowed %s over %d samples", counts, len(result))
    return result
