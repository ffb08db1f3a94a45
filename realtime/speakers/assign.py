"""Online speaker assignment: each utterance gets a speaker when it arrives; past ones may move.

Pure numpy, no model: the input is an utterance id with its unit-length voice print
(:class:`VoicePrint`), the output an :class:`Assignment`. Two steps per utterance:

1. **Nearest speaker.** A speaker's centroid is the normalised sum of its utterances' voice prints
   (and of its enrolment print). The utterance joins the speaker whose centroid is most similar
   (cosine) when that similarity reaches ``threshold``, when ``max_speakers`` are already known or
   when it is shorter than ``min_duration`` (a short clip's voice print is unreliable); otherwise it
   opens a new speaker.
2. **Re-clustering** (``recluster``). Emotional speech moves a voice a lot, so the first few
   utterances of a speaker can land anywhere. Once ``min_recluster`` utterances are known, all of
   the last ``history`` ones (the new one included) are clustered again: spectral clustering of
   their cosine affinities, each row pruned to its ``neighbours`` (a fraction of the utterances)
   nearest, the number of speakers taken from the largest eigengap of the graph Laplacian (then
   capped at ``max_speakers``); without ``max_speakers``, clusters whose centroids are at least
   ``merge_threshold`` alike are then merged (one voice split by its emotions). The clusters are
   matched to the current speakers by overlap (one to one, Hungarian); a cluster without a match
   opens a speaker. The new utterance gets its cluster's speaker; every earlier utterance whose
   speaker changed is returned as a :class:`Revision` in the same :class:`Assignment`: revisions
   are never silent. Re-clustering runs after every utterance at first, then after every
   ``min(max_interval, count // 4)``-th one.

Names: speakers enrolled with a clip (:meth:`OnlineSpeakerAssigner.enroll`) keep theirs; other
speakers take, when they appear, the first free name of ``names``, then ``{prefix} N``. A speaker
left without utterances by re-clustering is dropped (enrolled speakers stay) and its name is free
again.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment  # at import: not on the event loop later

# Chosen on dev data (RAVDESS actors 01-16, EMO-DB): docs/RESULTS.md, "Speakers (issue 12)".
DEFAULT_THRESHOLD = 0.6
DEFAULT_NEIGHBOURS = 0.15
DEFAULT_MERGE_THRESHOLD = 0.8
MAX_CLUSTERS = 8  # eigengap search range when max_speakers is not given
ENROLMENT_WEIGHT = 1000.0  # an enrolment print outweighs any overlap when clusters are matched


@dataclass(frozen=True)
class SpeakerOptions:
    """How utterances are grouped into speakers and named."""

    threshold: float = DEFAULT_THRESHOLD  # join the nearest speaker at this cosine or above
    max_speakers: int | None = None  # then every utterance joins the nearest speaker
    names: tuple[str, ...] = ()  # for speakers in order of first appearance
    prefix: str = "speaker"  # names after ``names``: "speaker 1", "speaker 2", ...
    min_duration: float = 0.5  # seconds; shorter utterances never open a new speaker
    recluster: bool = True  # cluster the history again after each utterance (revisions)
    min_recluster: int = 4  # utterances needed before re-clustering starts
    max_interval: int = 5  # re-cluster after every min(max_interval, count // 4)-th utterance
    history: int = 200  # utterances re-clustered (older ones keep their speaker)
    neighbours: float = DEFAULT_NEIGHBOURS  # affinity row pruning: fraction kept (at least 3)
    merge_threshold: float = DEFAULT_MERGE_THRESHOLD  # without max_speakers: clusters this
    # alike (cosine of their centroids) become one

    def __post_init__(self) -> None:
        for name in ("threshold", "merge_threshold"):
            value = getattr(self, name)
            if not -1.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a cosine in [-1, 1], got {value}")
        if self.max_speakers is not None and self.max_speakers < 1:
            raise ValueError(f"max_speakers must be at least 1, got {self.max_speakers}")
        if self.min_duration < 0:
            raise ValueError(f"min_duration must not be negative, got {self.min_duration}")
        if self.min_recluster < 2 or self.history < self.min_recluster or self.max_interval < 1:
            raise ValueError("need 2 <= min_recluster <= history and max_interval >= 1")
        if not 0.0 < self.neighbours <= 1.0:
            raise ValueError(f"neighbours must be a fraction in (0, 1], got {self.neighbours}")
        if len(set(self.names)) != len(self.names) or not all(self.names):
            raise ValueError(f"speaker names must be distinct and not empty: {self.names}")


@dataclass(frozen=True)
class VoicePrint:
    """One utterance's speaker embedding (any length; normalised here) and its length in seconds."""

    utterance_id: int
    embedding: np.ndarray = field(repr=False)
    duration: float = math.inf


@dataclass(frozen=True)
class Revision:
    """A past utterance moved from speaker ``old`` to speaker ``new``."""

    utterance_id: int
    old: str
    new: str


@dataclass(frozen=True)
class Assignment:
    """Where an utterance went: its speaker, the cosine to the nearest speaker's centroid before
    it joined (NaN when no speaker was known), whether its speaker is new, and the revisions of
    past utterances that it caused."""

    utterance_id: int
    speaker: str
    similarity: float
    new_speaker: bool
    revisions: tuple[Revision, ...] = ()


@dataclass
class _Speaker:
    name: str
    total: np.ndarray  # sum of the members' voice prints (and the enrolment print)
    members: int = 0
    enrolment: np.ndarray | None = None

    @property
    def weight(self) -> int:
        return self.members + int(self.enrolment is not None)

    def centroid(self) -> np.ndarray | None:
        norm = float(np.linalg.norm(self.total))
        return self.total / norm if norm > 1e-6 and self.weight else None


def unit(vector: np.ndarray) -> np.ndarray:
    """``vector`` as a float64 unit vector; raises ValueError for zero, NaN or non-1-d input."""
    array = np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(array))
    if array.ndim != 1 or not math.isfinite(norm) or norm == 0:
        raise ValueError("a voice print must be a finite, non-zero 1-d vector")
    return array / norm


# --- clustering -------------------------------------------------------------------------------


def kmeans(points: np.ndarray, k: int, *, restarts: int = 4, iterations: int = 50) -> np.ndarray:
    """Labels of ``points`` (n, d) in ``k`` clusters: k-means++ starts with a fixed seed, best of
    ``restarts`` by inertia. Deterministic. (scikit-learn's ``KMeans`` in its place: the same
    final labels, assignment p95 8 ms instead of 2; docs/RESULTS.md, Speakers.)"""
    n = len(points)
    if k >= n:
        return np.arange(n)
    rng = np.random.default_rng(0)
    best, best_inertia = np.zeros(n, dtype=int), math.inf
    for _ in range(restarts):
        centres = [points[rng.integers(n)]]
        for _ in range(1, k):
            d2 = np.min([((points - c) ** 2).sum(axis=1) for c in centres], axis=0)
            total = float(d2.sum())
            pick = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
            centres.append(points[pick])
        centre = np.array(centres)
        labels = np.zeros(n, dtype=int)
        for step in range(iterations):
            distances = ((points[:, None, :] - centre[None]) ** 2).sum(axis=2)
            new = distances.argmin(axis=1)
            if step and np.array_equal(new, labels):
                break
            labels = new
            for j in range(k):
                if np.any(labels == j):
                    centre[j] = points[labels == j].mean(axis=0)
        inertia = float(((points - centre[labels]) ** 2).sum())
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    return best


def spectral_clusters(
    vectors: np.ndarray, *, neighbours: float, max_clusters: int, merge_threshold: float | None
) -> np.ndarray:
    """Cluster labels (0..k-1) of unit ``vectors`` (n, d): pruned cosine affinity, eigengap of the
    unnormalised Laplacian for k (at most ``max_clusters``), k-means on the spectral embedding,
    then clusters whose centroids reach ``merge_threshold`` (if given) merged, most alike first."""
    n = len(vectors)
    if n < 2:
        return np.zeros(n, dtype=int)
    affinity = vectors @ vectors.T
    keep = min(n - 1, max(3, round(neighbours * n)))
    weakest = np.argsort(affinity, axis=1)[:, : n - keep]
    np.put_along_axis(affinity, weakest, 0.0, axis=1)
    affinity = np.clip(0.5 * (affinity + affinity.T), 0.0, None)
    np.fill_diagonal(affinity, 0.0)
    laplacian = np.diag(affinity.sum(axis=1)) - affinity
    values, vecs = np.linalg.eigh(laplacian)
    # The largest eigengap over the usual range, then the cap: with more voices than allowed,
    # a search within the cap alone often finds no gap and merges everything.
    top = max(1, min(max(max_clusters, MAX_CLUSTERS), n - 1))
    k = min(max_clusters, int(np.argmax(np.diff(values[: top + 1]))) + 1) if top > 1 else 1
    labels = kmeans(vecs[:, :k], k) if k > 1 else np.zeros(n, dtype=int)
    return merge_clusters(vectors, labels, 2.0 if merge_threshold is None else merge_threshold)


def merge_clusters(vectors: np.ndarray, labels: np.ndarray, threshold: float) -> np.ndarray:
    """Merge the two clusters with the most alike centroids while they reach ``threshold``;
    returns labels renumbered 0..k-1 in order of first occurrence."""
    labels = labels.copy()
    while True:
        ids = list(dict.fromkeys(labels.tolist()))
        if len(ids) < 2:
            break
        centroids = np.stack([vectors[labels == i].sum(axis=0) for i in ids])
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        alike = centroids @ centroids.T
        np.fill_diagonal(alike, -2.0)
        a, b = np.unravel_index(int(np.argmax(alike)), alike.shape)
        if alike[a, b] < threshold:
            break
        labels[labels == ids[b]] = ids[a]
    order = {old: new for new, old in enumerate(dict.fromkeys(labels.tolist()))}
    return np.array([order[v] for v in labels.tolist()], dtype=int)


# --- the assigner -----------------------------------------------------------------------------


class OnlineSpeakerAssigner:
    """Assigns utterances to speakers one at a time (see the module docstring)."""

    def __init__(self, options: SpeakerOptions | None = None) -> None:
        self.options = options or SpeakerOptions()
        self._speakers: list[_Speaker] = []  # in order of first appearance
        self._labels: dict[int, str] = {}  # utterance id -> current speaker name
        # The last ``history`` utterances: (id, unit voice print).
        self._history: deque[tuple[int, np.ndarray]] = deque(maxlen=self.options.history)
        self._dim: int | None = None
        self._count = 0  # utterances assigned

    # --- state -----------------------------------------------------------------------------

    @property
    def speakers(self) -> tuple[str, ...]:
        """The current speakers' names, in order of first appearance (enrolled ones first)."""
        return tuple(s.name for s in self._speakers)

    @property
    def labels(self) -> dict[int, str]:
        """Every assigned utterance's current speaker (revisions included)."""
        return dict(self._labels)

    def _speaker(self, name: str) -> _Speaker:
        return next(s for s in self._speakers if s.name == name)

    def _check_dim(self, vector: np.ndarray) -> None:
        if self._dim is None:
            self._dim = len(vector)
        elif len(vector) != self._dim:
            raise ValueError(f"voice print has {len(vector)} dimensions, expected {self._dim}")

    def _names(self) -> Iterator[str]:
        yield from self.options.names
        number = 1
        while True:
            yield f"{self.options.prefix} {number}"
            number += 1

    def _open(self, vector: np.ndarray | None = None) -> _Speaker:
        taken = {s.name for s in self._speakers}
        name = next(n for n in self._names() if n not in taken)
        speaker = _Speaker(name, np.zeros(self._dim or 0) if vector is None else vector.copy())
        self._speakers.append(speaker)
        return speaker

    @property
    def _full(self) -> bool:
        limit = self.options.max_speakers
        return limit is not None and len(self._speakers) >= limit

    # --- enrolment and assignment -----------------------------------------------------------

    def enroll(self, name: str, embedding: np.ndarray) -> None:
        """A known voice: ``name`` is given to the utterances nearest to ``embedding``."""
        if not name:
            raise ValueError("an enrolled speaker needs a name")
        if any(s.name == name for s in self._speakers):
            raise ValueError(f"speaker {name!r} is already known")
        if self._full:
            raise ValueError(f"cannot enroll {name!r}: max_speakers is {self.options.max_speakers}")
        vector = unit(embedding)
        self._check_dim(vector)
        self._speakers.append(_Speaker(name, vector.copy(), enrolment=vector))

    def _joins(self, vector: np.ndarray, duration: float) -> tuple[int, float]:
        """Index of the speaker a unit voice print joins (-1: a new one) and its cosine."""
        centroids = [s.centroid() for s in self._speakers]
        sims = [-math.inf if c is None else float(vector @ c) for c in centroids]
        best = int(np.argmax(sims)) if sims else -1
        similarity = sims[best] if best >= 0 and sims[best] > -math.inf else math.nan
        short = duration < self.options.min_duration
        if best >= 0 and (similarity >= self.options.threshold or self._full or short):
            return best, similarity
        return -1, similarity

    def nearest(self, embedding: np.ndarray, duration: float = math.inf) -> str:
        """The speaker a voice print would join now (the name a new speaker would get if none):
        a guess for speech still going on; nothing is assigned or changed."""
        vector = unit(embedding)
        self._check_dim(vector)
        best, _ = self._joins(vector, duration)
        if best >= 0:
            return self._speakers[best].name
        taken = {s.name for s in self._speakers}
        return next(n for n in self._names() if n not in taken)

    def assign(self, voice: VoicePrint) -> Assignment:
        """Give ``voice``'s utterance a speaker; past utterances may be revised (returned)."""
        if voice.utterance_id in self._labels:
            raise ValueError(f"utterance {voice.utterance_id} was already assigned")
        vector = unit(voice.embedding)
        self._check_dim(vector)
        known = set(self.speakers)
        best, similarity = self._joins(vector, voice.duration)
        if best >= 0:
            speaker = self._speakers[best]
            speaker.total = speaker.total + vector
        else:
            speaker = self._open(vector)
        speaker.members += 1
        self._labels[voice.utterance_id] = speaker.name
        self._history.append((voice.utterance_id, vector))
        revisions: list[Revision] = []
        self._count += 1
        interval = max(1, min(self.options.max_interval, self._count // 4))
        due = self._count % interval == 0
        if self.options.recluster and len(self._history) >= self.options.min_recluster and due:
            revisions = self._recluster()
        name = self._labels[voice.utterance_id]
        return Assignment(
            voice.utterance_id,
            name,
            similarity,
            name not in known,
            tuple(r for r in revisions if r.utterance_id != voice.utterance_id),
        )

    def _recluster(self) -> list[Revision]:
        """Cluster the history again, match clusters to speakers, move what changed."""
        options = self.options
        ids = [i for i, _ in self._history]
        vectors = np.stack([v for _, v in self._history])
        enrolled = [s for s in self._speakers if s.enrolment is not None]
        points = np.concatenate(
            [vectors, *[s.enrolment[None] for s in enrolled if s.enrolment is not None]]
        )
        capped = options.max_speakers is not None
        clusters = spectral_clusters(
            points,
            neighbours=options.neighbours,
            max_clusters=options.max_speakers or MAX_CLUSTERS,
            merge_threshold=None if capped else options.merge_threshold,
        )
        # Overlap of each cluster with each current speaker; enrolment prints weigh most.
        names = [s.name for s in self._speakers]
        overlap = np.zeros((int(clusters.max()) + 1, len(names)))
        for index, cluster in enumerate(clusters[: len(ids)]):
            overlap[cluster, names.index(self._labels[ids[index]])] += 1
        for offset, speaker in enumerate(enrolled):
            overlap[clusters[len(ids) + offset], names.index(speaker.name)] += ENROLMENT_WEIGHT
        rows, cols = linear_sum_assignment(-overlap)
        target: dict[int, _Speaker] = {
            r: self._speakers[c] for r, c in zip(rows, cols, strict=True) if overlap[r, c] > 0
        }
        revisions: list[Revision] = []
        for index, cluster in enumerate(clusters[: len(ids)]):
            if cluster not in target:
                if self._full:  # no room: the nearest speaker takes the cluster
                    target[cluster] = self._nearest(vectors[clusters[: len(ids)] == cluster])
                else:
                    target[cluster] = self._open()
            old = self._speaker(self._labels[ids[index]])
            new = target[cluster]
            if new is old:
                continue
            old.total, old.members = old.total - vectors[index], old.members - 1
            new.total, new.members = new.total + vectors[index], new.members + 1
            self._labels[ids[index]] = new.name
            revisions.append(Revision(ids[index], old.name, new.name))
        self._speakers = [s for s in self._speakers if s.weight > 0]
        return revisions

    def _nearest(self, vectors: np.ndarray) -> _Speaker:
        centre = vectors.sum(axis=0)
        scores = [
            float(centre @ c) if (c := s.centroid()) is not None else -math.inf
            for s in self._speakers
        ]
        return self._speakers[int(np.argmax(scores))]

    def assign_all(self, voices: Sequence[VoicePrint]) -> list[Assignment]:
        """:meth:`assign` for each voice print in order."""
        return [self.assign(voice) for voice in voices]
