"""The encoder's tokenizer through the ``tokenizers`` library alone.

transformers' tokenizers for BERT-style backbones run the backbone's ``tokenizer.json`` in the
``tokenizers`` library; loading them through ``AutoTokenizer`` costs about 0.5-0.8 s of
transformers imports at every start. :class:`TextTokenizer` reads the same file and offers the
small part of the API that :class:`~unimse.processor.UniMSEProcessor` uses (token ids without
special tokens, the ids of the special tokens, decoding for logs and tests). Tests compare its
ids with transformers'.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ("cls_token", "sep_token", "pad_token", "eos_token")


class TextTokenizer:
    def __init__(self, tokenizer: Any, special: dict[str, str]) -> None:
        self._tokenizer = tokenizer
        self.cls_token_id = self._id(special.get("cls_token"))
        self.sep_token_id = self._id(special.get("sep_token"))
        self.pad_token_id = self._id(special.get("pad_token"))
        self.eos_token_id = self._id(special.get("eos_token"))

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self._tokenizer.token_to_id(token)

    @classmethod
    def from_folder(cls, folder: Path) -> TextTokenizer | None:
        """The tokenizer of a backbone folder, or None when it has no ``tokenizer.json`` or
        names no padding token (then transformers should load it)."""
        path = folder / "tokenizer.json"
        if not path.is_file():
            return None
        from tokenizers import Tokenizer

        special: dict[str, str] = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            if (folder / name).is_file():
                values = json.loads((folder / name).read_text(encoding="utf-8"))
                for key in SPECIAL_TOKENS:
                    token = values.get(key)
                    if isinstance(token, dict):  # {"content": "[CLS]", ...}
                        token = token.get("content")
                    if isinstance(token, str):
                        special.setdefault(key, token)
        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.no_padding()  # the processor pads and cuts by itself, as with transformers
        tokenizer.no_truncation()
        made = cls(tokenizer, special)
        return made if made.pad_token_id is not None else None

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        encoding = self._tokenizer.encode(text, add_special_tokens=add_special_tokens)
        return {"input_ids": list(encoding.ids)}

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens))
