"""Inputs of /v1/embeddings as the model will see them: counted, checked, tokenised once.

Each input is tokenised here with the model's own tokenizer (special tokens added, nothing
cut), so the service knows every input's length before any work is queued: usage counts
exactly these tokens, an input over the model's window is refused (400,
`context_length_exceeded`, naming the input: the OpenAI API refuses over-long inputs, it
does not cut them), and the token budget is reserved by the real count. The ids then go to
the engine as `TokenIds`, so nothing is tokenised twice.

Token-id arrays (`input: [[101, 2023, ...]]` in the OpenAI API's shape) are ids in the
*served model's* vocabulary, without special tokens, as an OpenAI client sends its own
tokenizer's: the model's special tokens are put around them here. (LangChain's
`OpenAIEmbeddings` sends OpenAI's tiktoken ids unless `check_embedding_ctx_length=False`;
those mean nothing to another model.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.api_errors import APIError
from corpusmill.engine.inputs import TokenIds
from corpusmill.model import Model

_PROBE = "probe"


@dataclass(frozen=True)
class Prepared:
    items: list[TokenIds]
    tokens: int  # special tokens included: what the model reads


class InputCheck:
    """Tokenises and checks inputs for one model (thread-safe: the model's tokenizer lends
    each call its own copy)."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.window = model.max_seq_length
        self._specials: tuple[list[int], list[int]] | None = None

    def texts(self, texts: Sequence[str]) -> Prepared:
        for i, text in enumerate(texts):
            if not text:
                raise APIError(400, f"input[{i}] is an empty string", param="input")
        ids = [t["input_ids"] for t in self.model.tokens.tokenize(list(texts), truncate=False)]
        return self._checked(ids)

    def token_arrays(self, arrays: Sequence[Sequence[int]]) -> Prepared:
        prefix, suffix = self.specials()
        vocab = len(self.model.tokenizer)
        ids = []
        for i, array in enumerate(arrays):
            if not array:
                raise APIError(400, f"input[{i}] is an empty token array", param="input")
            bad = next((t for t in array if not 0 <= t < vocab), None)
            if bad is not None:
                raise APIError(
                    400,
                    f"input[{i}] holds token id {bad}, outside the model's vocabulary "
                    f"(0..{vocab - 1})",
                    param="input",
                )
            ids.append([*prefix, *array, *suffix])
        return self._checked(ids)

    def specials(self) -> tuple[list[int], list[int]]:
        """The ids the tokenizer puts before and after a text's own ([CLS] / [SEP] for BERT)."""
        if self._specials is None:
            full = self.model.tokens.tokenize([_PROBE], truncate=False)[0]["input_ids"]
            bare = self.model.tokenizer(_PROBE, add_special_tokens=False)["input_ids"]
            at = next(i for i in range(len(full)) if full[i : i + len(bare)] == bare)
            self._specials = (full[:at], full[at + len(bare) :])
        return self._specials

    def _checked(self, ids: list[list[int]]) -> Prepared:
        for i, row in enumerate(ids):
            if len(row) > self.window:
                raise APIError(
                    400,
                    f"This model's maximum context length is {self.window} tokens, however "
                    f"input[{i}] has {len(row)} tokens. Shorten or split it; inputs are "
                    "refused, never cut.",
                    param="input",
                    code="context_length_exceeded",
                )
        return Prepared([TokenIds(row) for row in ids], sum(len(r) for r in ids))
