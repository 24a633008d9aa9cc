"""The model's tokenizer, loaded on its own (no weights) and safe to share across threads.

Chunking needs only this: a run whose chunks are all embedded already loads no weights.
"""

from __future__ import annotations

import copy
import queue

from corpusmill.model.files import ModelDescription, tokenizer_fingerprint


class Tokenizer:
    """Token ids per text (or per (query, passage) pair), truncated to the model limit.

    A Rust tokenizer object must not be used by two threads at once: a call that changes
    its truncation settings while another thread encodes fails with "Already borrowed"
    (huggingface/tokenizers#537). `tokenize` therefore borrows a private copy from a pool
    of spares, made on first need (~40 ms) and reused across runs and threads.
    """

    def __init__(self, description: ModelDescription) -> None:
        import transformers

        self.kind = description.kind
        self.max_seq_length = description.max_seq_length
        self.hf = transformers.AutoTokenizer.from_pretrained(
            str(description.path), local_files_only=True, trust_remote_code=False
        )
        self.fingerprint = tokenizer_fingerprint(
            description.path, self.hf.vocab_files_names.values(), self.max_seq_length
        )
        self.uses_token_type_ids = "token_type_ids" in self.hf.model_input_names
        self.pad_id = self.hf.pad_token_id or 0
        self._spares: queue.SimpleQueue = queue.SimpleQueue()

    def tokenize(self, texts, truncate: bool = True) -> list[dict[str, list[int]]]:
        """`truncate=False`: every token of a single text (the query service counts and checks
        its inputs); pairs are always truncated."""
        try:
            tokenizer = self._spares.get_nowait()
        except queue.Empty:
            tokenizer = copy.deepcopy(self.hf)
        try:
            return self._tokenize_with(tokenizer, texts, truncate)
        finally:
            self._spares.put(tokenizer)

    def _tokenize_with(self, tokenizer, texts, truncate: bool = True) -> list[dict[str, list[int]]]:
        if self.kind == "cross-encoder":
            firsts = [a for a, _ in texts]
            seconds = [b for _, b in texts]
            enc = tokenizer(
                firsts,
                seconds,
                truncation="longest_first",
                max_length=self.max_seq_length,
                return_attention_mask=False,
            )
        else:
            enc = tokenizer(
                list(texts),
                truncation=truncate,
                max_length=self.max_seq_length if truncate else None,
                return_attention_mask=False,
            )
        keys = ["input_ids"] + (["token_type_ids"] if self.uses_token_type_ids else [])
        return [{k: enc[k][i] for k in keys} for i in range(len(enc["input_ids"]))]
