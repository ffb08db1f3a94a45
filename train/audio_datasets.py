"""EMO-DB, RAVDESS and speech_av as training/evaluation datasets: :class:`~train.data.Sample` rows
with acoustic feature sequences, fixed speaker-independent splits, and the transcripts of EMO-DB
and RAVDESS.

Samples are audio only by default (text ``""``): German acted speech carries no English words for
the ASR to hear, and speech_av has no transcripts. EMO-DB can also be given its transcript (the
sentence its file name names), which is the only way any data here pairs live-computable audio
with text; :data:`EMODB_TRANSCRIPTS` holds the ten sentences.

Splits (fixed, deterministic, speaker independent where speakers are known):

- EMO-DB (speaker = first two characters of the file name): train = speakers 03 08 09 10 11,
  dev = 12, test = 13 (:data:`EMODB_SPLITS`). ``all`` = every file in the folder. Dev is used for
  model selection only, test for the reported number; the 7-fold speaker cross-validation of
  ``benchmarks/speech_cv.py`` is the fuller measurement.
- RAVDESS (speaker = actor, the name's last field): train = actors 01-14, dev = 15-16, test =
  17-20 (:data:`RAVDESS_SPLITS`; two men and two women in the test split). Every actor speaks two
  neutral statements in eight emotions; calm counts as neutral.
- speech_av (47 clips ``00.wav`` ... ``46.wav``, speakers not annotated): test = the 12 clips whose
  number is 2 modulo 4 (02, 06, ..., 46), spread evenly over the corpus' blocks of similar
  clips; train = the other 35. There is no dev split (too small): selection ignores speech_av.

Acoustic features are computed once and cached on disk (:func:`cached_features`), keyed by a hash
of the exact 16 kHz audio the extractor sees (so trimming or resampling changes give a new key)
plus the extractor's name and dimension. The extractor names are versioned (``-v1``): a changed
extractor gets a new name, never a stale cache.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

from train.acted_labels import ACTED_DERIVED
from train.array_cache import save_array
from train.audio_data import (
    CORPUS_LANGUAGES,
    EMODB,
    RAVDESS,
    SAMPLE_RATE,
    SPEECH_AV,
    AudioSample,
    emodb_class_of,
    load_emodb,
    load_ravdess,
    load_speech_av,
    ravdess_transcript,
)
from train.data import AUDIO_DATASETS, DataError, Sample
from train.unification import DEFAULT_CACHE, UnifiedSample
from unimse.config import FeatureSpec
from unimse.labels import UniversalLabel
from unimse.speakers import FIRST_SPEAKER

logger = logging.getLogger(__name__)

AUDIO_SPLITS: tuple[str, ...] = ("train", "dev", "test", "all")

EMODB_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("03", "08", "09", "10", "11"),
    "dev": ("12",),
    "test": ("13",),
}
# RAVDESS (speaker = actor, odd male, even female): train actors 01-14, dev 15-16, test 17-20.
RAVDESS_SPLITS: dict[str, tuple[str, ...]] = {
    "train": tuple(f"{n:02d}" for n in range(1, 15)),
    "dev": ("15", "16"),
    "test": ("17", "18", "19", "20"),
}
SPEECH_AV_TEST_EVERY = 4  # clip number % 4 == 2 -> test
SPEECH_AV_TEST_OFFSET = 2

# The ten EMO-DB sentences, by text code (characters 3-5 of the file name). Source: the EMO-DB
# documentation (Burkhardt et al., "A Database of German Emotional Speech", Interspeech 2005;
# emodb.bilderbar.info), as reproduced in audb's emodb description and several EMO-DB loaders.
# Spelling variants seen there ("Heute Abend", "hoch getragen") do not change the words.
EMODB_TRANSCRIPTS: dict[str, str] = {
    "a01": "Der Lappen liegt auf dem Eisschrank.",
    "a02": "Das will sie am Mittwoch abgeben.",
    "a04": "Heute abend könnte ich es ihm sagen.",
    "a05": "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.",
    "a07": "In sieben Stunden wird es soweit sein.",
    "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
    "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
    "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.",
    "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
    "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
}

# Universal-label fields of EMO-DB samples that come from our mapping rather than from the
# annotation (train.audio_data documents the mapping). They get the borrowed-label loss weight,
# like fields filled in by label unification. The score is a fixed valence choice per category
# (neutral's 0.0 is the label space's convention, so it counts as gold).
EMODB_DERIVED: dict[str, frozenset[str]] = {
    "anger": frozenset({"score"}),
    "happiness": frozenset({"score"}),
    "sadness": frozenset({"score"}),
    "neutral": frozenset(),
    "disgust": frozenset({"score", "iemocap_emotion"}),  # IEMOCAP has no disgust
    "fear": frozenset({"score", "iemocap_emotion"}),  # nor fear
    "boredom": frozenset({"score", "meld_emotion", "iemocap_emotion"}),  # neither has boredom
}
# speech_av: the score (3 x valence) is annotated; both emotion fields are derived from the
# valence/arousal quadrant.
SPEECH_AV_DERIVED = frozenset({"meld_emotion", "iemocap_emotion"})


def emodb_text_code(file_id: str) -> str:
    """The sentence code of an EMO-DB file id, e.g. ``03a01Wa`` -> ``a01``."""
    return file_id[2:5]


def emodb_transcript(file_id: str) -> str | None:
    return EMODB_TRANSCRIPTS.get(emodb_text_code(file_id))


def speech_av_split(file_id: str) -> str:
    try:
        number = int(file_id)
    except ValueError:
        return "train"
    return "test" if number % SPEECH_AV_TEST_EVERY == SPEECH_AV_TEST_OFFSET else "train"


def select_split(
    samples: Sequence[AudioSample], dataset: str, split: str, exclude: Collection[str] = ()
) -> list[AudioSample]:
    """The fixed split of :mod:`train.audio_datasets` (``all``: every sample), less the speakers
    whose :func:`speaker_key` is in ``exclude`` (held out of a training run)."""
    if exclude:
        return [s for s in select_split(samples, dataset, split) if speaker_key(s) not in exclude]
    if split not in AUDIO_SPLITS:
        raise DataError(f"unknown split {split!r}; choose from {', '.join(AUDIO_SPLITS)}")
    if split == "all":
        return list(samples)
    if dataset in (EMODB, RAVDESS):
        speakers = (EMODB_SPLITS if dataset == EMODB else RAVDESS_SPLITS)[split]
        chosen = [s for s in samples if s.speaker in speakers]
        if not chosen:
            raise DataError(
                f"no {dataset} files of speaker(s) {' '.join(speakers)} (the {split} split); "
                "use --split all for a folder of other speakers"
            )
        return chosen
    if split == "dev":
        raise DataError("speech_av has no dev split (train: 35 clips, test: 12)")
    return [s for s in samples if speech_av_split(s.id) == split]


def feature_cache_key(audio: np.ndarray, spec: FeatureSpec) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()
    return f"{spec.name}-{spec.dim}-{digest[:32]}"


def cached_features(
    audio: np.ndarray,
    spec: FeatureSpec,
    extract: Callable[[np.ndarray], np.ndarray],
    cache_dir: Path | None = DEFAULT_CACHE,
) -> np.ndarray:
    """``extract(audio)``, cached as ``.npy`` under ``cache_dir/features`` (None: no cache)."""
    if cache_dir is None:
        return extract(audio)
    path = cache_dir / "features" / f"{feature_cache_key(audio, spec)}.npy"
    if path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            logger.warning("unreadable feature cache file %s: recomputing", path)
        else:
            if cached.ndim == 2 and cached.shape[1] == spec.dim:
                return cached
    features = np.asarray(extract(audio), dtype=np.float32)
    save_array(path, features)
    return features


# Inside ``corpora_read_once()``: the corpora read so far, by dataset and folder.
_read: dict[tuple[str, Path], list[AudioSample]] | None = None


@contextmanager
def corpora_read_once() -> Iterator[None]:
    """Within the block each audio corpus folder is decoded once (the trainer asks for a corpus's
    splits, neutral voices and baseline prior separately); outside it, every call reads the
    folder, so a changed folder is seen."""
    global _read
    outer = _read
    _read = {} if outer is None else outer
    try:
        yield
    finally:
        _read = outer


def load_audio_corpus(dataset: str, folder: Path) -> list[AudioSample]:
    """All samples of an audio corpus folder; a one-line :class:`DataError` when unusable."""
    loader = {EMODB: load_emodb, SPEECH_AV: load_speech_av, RAVDESS: load_ravdess}.get(dataset)
    if loader is None:
        raise DataError(f"unknown audio dataset {dataset!r}; choose from {AUDIO_DATASETS}")
    key = (dataset, folder.resolve())
    if _read is not None and key in _read:
        return list(_read[key])
    try:
        items = loader(folder)
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(str(exc)) from None
    if _read is not None:
        _read[key] = items
    return list(items)


def corpus_folder(dataset: str, data_dir: Path) -> Path:
    """``data_dir/<dataset>`` (a ../shared/data-like root) or ``data_dir`` itself when it already
    holds the wav files."""
    nested = data_dir / dataset
    if nested.is_dir():
        return nested
    if dataset == RAVDESS and data_dir.is_dir() and any(data_dir.glob("Actor_*")):
        return data_dir
    if data_dir.is_dir() and any(p.suffix.lower() in AUDIO_SUFFIXES for p in data_dir.iterdir()):
        return data_dir
    raise DataError(f"{dataset} folder not found: {nested} (nor audio files in {data_dir})")


AUDIO_SUFFIXES = (".wav", ".flac")


def transcript_of(item: AudioSample) -> str | None:
    """The words of a corpus file whose sentence is known (EMO-DB, RAVDESS), else None."""
    if item.dataset == EMODB:
        return emodb_transcript(item.id)
    if item.dataset == RAVDESS:
        return ravdess_transcript(item.id) or None
    return None


def to_sample(
    item: AudioSample, split: str, acoustic: np.ndarray | None, *, transcript: bool = False
) -> Sample:
    """One audio sample as a :class:`Sample` (text ``""`` unless ``transcript`` is asked for)."""
    text = ""
    if transcript:
        if item.dataset not in (EMODB, RAVDESS):
            raise ValueError(f"{item.dataset} has no transcripts")
        text = transcript_of(item) or ""
    uid = f"{item.dataset}/{item.id}" + ("+text" if text else "")
    return Sample.labelled(
        uid,
        item.dataset,
        split,
        item.id,
        FIRST_SPEAKER,
        text,
        item.label,
        acoustic=acoustic,
        language=CORPUS_LANGUAGES[item.dataset],
    )


def speaker_key(item: AudioSample) -> str:
    """Whose voice a clip is, for speaker baselines (a clip of an unknown speaker: its own)."""
    return f"{item.dataset}/{item.speaker or item.id}"


def corpus_features(
    items: Sequence[AudioSample],
    spec: FeatureSpec,
    cache_dir: Path | None = DEFAULT_CACHE,
    prior: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Each clip's acoustic features for ``spec`` (cached); with a speaker baseline
    (``spec.baseline``), relative to the speaker's running mean voice from ``prior`` on, the
    clips of each speaker taken in a seeded random order as a live conversation would."""
    from unimse.features import acoustic_extractor
    from unimse.voice_baseline import normalise_corpus

    extract = acoustic_extractor(spec)
    feats = [cached_features(item.audio, spec, extract, cache_dir) for item in items]
    if not spec.baseline:
        return feats
    if prior is None:
        raise ValueError(f"{spec.name}: a speaker baseline needs its prior")
    return normalise_corpus(feats, [speaker_key(i) for i in items], prior, spec.baseline)


def voice_prior(
    datasets: Sequence[str],
    data_dir: str | Path,
    spec: FeatureSpec,
    cache_dir: Path | None = DEFAULT_CACHE,
    dev: Sequence[str] = (),
    exclude: Collection[str] = (),
) -> np.ndarray:
    """The speaker-baseline prior: the mean utterance-mean state of the training clips of the
    audio corpora among ``datasets`` (and of the dev clips of those in ``dev``: a refit), less
    the speakers in ``exclude``."""
    from unimse.voice_baseline import prior_of

    items: list[AudioSample] = []
    for name in (d for d in datasets if d in AUDIO_DATASETS):
        corpus = load_audio_corpus(name, corpus_folder(name, Path(data_dir)))  # read once
        for split in ("train", "dev") if name in dev else ("train",):
            items += select_split(corpus, name, split, exclude)
    raw = replace(spec, baseline=0.0)
    return prior_of(corpus_features(items, raw, cache_dir))


def is_neutral(item: AudioSample) -> bool:
    """A clip spoken without emotion (RAVDESS neutral and calm, EMO-DB neutral)."""
    return item.label.meld_emotion == "neutral" and item.label.polarity == "neutral"


def neutral_voice_clips(
    dataset: str,
    split: str,
    data_dir: str | Path,
    spec: FeatureSpec,
    prior: np.ndarray | None = None,
    cache_dir: Path | None = DEFAULT_CACHE,
    shifts: Sequence[float] = (),
    exclude: Collection[str] = (),
) -> list[np.ndarray]:
    """Acoustic features of the neutral clips of ``split``'s speakers (less ``exclude``), as a
    conversation in a
    neutral voice gives them: with a speaker baseline, each speaker's running mean over their
    neutral clips only (what live use sees when someone speaks without emotion throughout).
    ``shifts``: also each speaker's clips pitch-shifted by so many semitones
    (:func:`pitch_shifted`)."""
    chosen = neutral_voice_items(dataset, split, data_dir, exclude)
    return neutral_voices(chosen, spec, prior, cache_dir, shifts)


def neutral_voice_items(
    dataset: str, split: str, data_dir: str | Path, exclude: Collection[str] = ()
) -> list[AudioSample]:
    """The neutral clips of ``split``'s speakers (less ``exclude``), in the order
    :func:`neutral_voice_clips` gives their features (no pitch shifts)."""
    folder = corpus_folder(dataset, Path(data_dir))
    return [
        i
        for i in select_split(load_audio_corpus(dataset, folder), dataset, split, exclude)
        if is_neutral(i)
    ]


def neutral_voices(
    items: Sequence[AudioSample],
    spec: FeatureSpec,
    prior: np.ndarray | None = None,
    cache_dir: Path | None = DEFAULT_CACHE,
    shifts: Sequence[float] = (),
) -> list[np.ndarray]:
    """:func:`neutral_voice_clips` for samples already loaded (one split of one corpus)."""
    neutral = [i for i in items if is_neutral(i)]
    voices = neutral + [clip for shift in shifts for clip in pitch_shifted(neutral, shift)]
    return corpus_features(voices, spec, cache_dir, prior)


def pitch_shifted(items: Sequence[AudioSample], semitones: float) -> list[AudioSample]:
    """Copies of ``items`` with the pitch moved by ``semitones`` (librosa; same duration), each
    speaker's copies a speaker of their own: more voices from the same few speakers."""
    import librosa

    return [
        replace(
            item,
            audio=librosa.effects.pitch_shift(item.audio, sr=SAMPLE_RATE, n_steps=semitones).astype(
                np.float32
            ),
            speaker=f"{item.speaker or item.id}{semitones:+g}st",
        )
        for item in items
    ]


def load_audio_dataset(
    dataset: str,
    split: str,
    data_dir: str | Path,
    spec: FeatureSpec | None,
    *,
    transcripts: bool = False,
    cache_dir: Path | None = DEFAULT_CACHE,
    prior: np.ndarray | None = None,
    exclude: Collection[str] = (),
) -> list[Sample]:
    """``split`` of EMO-DB or speech_av (less the speakers in ``exclude``) as Samples with
    acoustic features for ``spec``.

    ``data_dir`` is a ../shared/data-like root or the corpus folder itself. ``spec`` None gives no
    features (a text-only model). With ``transcripts`` (EMO-DB, RAVDESS) every file whose sentence
    is known yields a second, text+audio sample beside its audio-only one. A spec with a speaker
    baseline needs its ``prior`` (:func:`voice_prior`).
    """
    folder = corpus_folder(dataset, Path(data_dir))
    chosen = select_split(load_audio_corpus(dataset, folder), dataset, split, exclude)
    features: list[np.ndarray | None] = [None] * len(chosen)
    if spec is not None:
        features = list(corpus_features(chosen, spec, cache_dir, prior))
    samples = as_samples(chosen, split, features, transcripts)
    logger.info("%s %s: %d samples from %s", dataset, split, len(samples), folder)
    return samples


def neutral_conversation_samples(
    dataset: str,
    split: str,
    data_dir: str | Path,
    spec: FeatureSpec,
    prior: np.ndarray,
    *,
    transcripts: bool = False,
    cache_dir: Path | None = DEFAULT_CACHE,
    exclude: Collection[str] = (),
) -> list[Sample]:
    """The neutral clips of ``split``'s speakers as a conversation in a neutral voice gives them
    (:func:`neutral_voices`: each relative to that speaker's neutral clips only), as Samples
    labelled like the clips (uid suffix ``@neutral-talk``).

    A speaker's baseline in a real conversation is mostly neutral speech, while the acted corpora
    mix 7 emotions per speaker: without this view a neutral voice of a new speaker, relative to
    its own neutral self, is an input training never showed (the linear probe on 4 folds of 22
    held-out speakers read 124 of 192 such voices as neutral, 172 with it; docs/RESULTS.md)."""
    folder = corpus_folder(dataset, Path(data_dir))
    chosen = select_split(load_audio_corpus(dataset, folder), dataset, split, exclude)
    neutral = [item for item in chosen if is_neutral(item)]
    features: list[np.ndarray | None] = list(neutral_voices(neutral, spec, prior, cache_dir))
    samples = [
        replace(sample, uid=f"{sample.uid}@neutral-talk")
        for sample in as_samples(neutral, split, features, transcripts)
    ]
    logger.info("%s %s: %d neutral-conversation samples", dataset, split, len(samples))
    return samples


def as_samples(
    items: Sequence[AudioSample],
    split: str,
    features: Sequence[np.ndarray | None],
    transcripts: bool,
) -> list[Sample]:
    """Each clip audio only, and with its sentence too where ``transcripts`` and it is known."""
    samples: list[Sample] = []
    for item, feats in zip(items, features, strict=True):
        samples.append(to_sample(item, split, feats))
        if transcripts and transcript_of(item):
            samples.append(to_sample(item, split, feats, transcript=True))
    return samples


def sample_label(sample: Sample) -> UniversalLabel:
    return UniversalLabel(
        sample.polarity or "neutral",
        sample.score or 0.0,
        sample.meld_emotion or "neutral",
        sample.iemocap_emotion or "neutral",
    )


def emodb_class_of_sample(sample: Sample) -> str:
    """The EMO-DB class of an EMO-DB sample (its label is the mapping's image of the class)."""
    return emodb_class_of(sample_label(sample))


def unified_audio(sample: Sample) -> UnifiedSample:
    """An audio sample as a unified training sample: every field is set; the fields our mapping
    derived (not annotated) are marked borrowed, so they train with the borrowed-label weight."""
    if sample.dataset == EMODB:
        derived = EMODB_DERIVED[emodb_class_of_sample(sample)]
    elif sample.dataset == SPEECH_AV:
        derived = SPEECH_AV_DERIVED
    elif sample.dataset == RAVDESS:
        derived = ACTED_DERIVED[sample.meld_emotion or "neutral"]
    else:
        raise ValueError(f"{sample.dataset} is not an audio dataset")
    return UnifiedSample.from_label(sample, sample_label(sample), derived)
