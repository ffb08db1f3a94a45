"""Shared fixtures.

- ``mosquitto_broker`` / ``mosquitto``: a real Mosquitto broker on a free loopback port
  (see ``tests/mqtt_broker.py``; tests skip when the binary is missing).
- ``make_result``: builds a valid :class:`realtime.messages.EmotionResult` with overridable fields
  (see ``tests/factories.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from mqtt_broker import mosquitto, mosquitto_broker  # noqa: F401 - fixtures

if TYPE_CHECKING:
    from realtime.messages import EmotionResult


@pytest.fixture(scope="session", autouse=True)
def private_state_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """State (the MQTT spool) goes to a temporary folder, never the user's home; subprocesses
    started by tests inherit it."""
    import os

    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state"))


@pytest.fixture
def make_result() -> Callable[..., EmotionResult]:
    """``make_result(seq=3, speaker="bob", ...)`` -> a valid EmotionResult."""
    from factories import result_factory

    return result_factory


# --- UniMSE test doubles: a tiny randomly initialised model (never shipped) -------------------

from pathlib import Path  # noqa: E402

from train.datadir import DEFAULT_DATA_DIR  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1] / DEFAULT_DATA_DIR


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real benchmark data beside the repository, or a skip saying why."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA.resolve()} (CI has ../shared/data)")
    return SHARED_DATA.resolve()


@pytest.fixture(scope="module")
def one_torch_thread():  # type: ignore[no-untyped-def]
    """Tiny nets on a busy 2-core machine are far faster with one torch thread. Modules opt in
    with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_unimse_config(**overrides: object):  # type: ignore[no-untyped-def]
    from unimse.config import FeatureSpec, UniMSEConfig

    base: dict[str, object] = {
        "backbone": "minilm",
        "fusion_layers": 2,
        "acoustic": FeatureSpec("test-acoustic", 8),
        "visual": FeatureSpec("test-visual", 6),
        "lstm_hidden": 8,
        "modality_dim": 8,
        "pmf_bottleneck": 16,
        "max_length": 64,
        "backbone_overrides": {
            "random_init": True,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
        },
    }
    base.update(overrides)
    return UniMSEConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
def tiny_config():  # type: ignore[no-untyped-def]
    return tiny_unimse_config()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight checkpoint folder loadable by ``EmotionPredictor.load``."""
    import torch

    from unimse.checkpoint import save_checkpoint
    from unimse.factory import build_model

    torch.manual_seed(0)
    model = build_model(tiny_unimse_config(acoustic=None, visual=None))
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny", half=False)


@pytest.fixture(scope="session")
def tiny_multimodal_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight checkpoint with the real live feature specs (emotrack-acoustic-v1,
    emotrack-visual-v1), so the pipeline computes audio and video features for it."""
    import torch

    from unimse.checkpoint import save_checkpoint
    from unimse.factory import build_model
    from unimse.features import ACOUSTIC_SPEC, VISUAL_SPEC

    torch.manual_seed(0)
    model = build_model(tiny_unimse_config(acoustic=ACOUSTIC_SPEC, visual=VISUAL_SPEC))
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny-mm", half=False)
