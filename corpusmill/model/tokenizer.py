"""The model's tokenizer, loaded on its own (no weights) and safe to share across threads.

Chunking needs only this: a run whose chunks are all embedded already loads no weights.

Two backends give the same ids. `hf` is Transformers' tokenizer (what the chunker uses,
for its offsets). The engine's own calls (`tokenize`) go straight to the `tokenizers`
library on the folder's tokenizer.json, configured once to truncate as Transformers'
call does, when that was checked to give the same ids, types and truncation as `hf` on
`probe.CHECK_TEXTS` (once per tokenizer and library versions, the result kept in the
forward probe's cache folder with the few facts the engine reads: padding id, token type
ids, fingerprint). A process that only embeds queries then never imports Transformers
(`import transformers` and its tokenizer cost ~1.2-3 s of a cold `corpusmill search`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import queue
from importlib import metadata
from typing import Any

from corpusmill.model.files import ModelDescription, tokenizer_fingerprint

FACTS_VERSION = 2  # what `_facts` records; a new one is checked afresh


class Tokenizer:
    """Token ids per text (or per (query, passage) pair), truncated to the model limit.

    A Rust tokenizer object must not be used by two threads at once: a call that changes
    its truncation settings while another thread encodes fails with "Already borrowed"
    (huggingface/tokenizers#537). `hf` calls therefore borrow a private copy from a pool
    of spares, made on first need (~40 ms) and reused across runs and threads; the
    `tokenizers` backend is configured once and only ever encodes, which threads may share.
    """

    def __init__(self, description: ModelDescription, cache_dir: str = "") -> None:
        self.description = description
        self.kind = description.kind
        self.max_seq_length = description.max_seq_length
        self._hf: Any = None
        self._spares: queue.SimpleQueue = queue.SimpleQueue()
        self._backend: Any = None  # tokenizers.Tokenizer, when it gives hf's ids
        from corpusmill.model import probe

        cache = probe.record_file(cache_dir, "tokenizer", self._key())
        facts = probe.read_record(cache)
        if facts is None:
            facts = self._facts()
            probe.write_record(cache, facts)
        self.fingerprint: str = facts["fingerprint"]
        self.uses_token_type_ids: bool = facts["uses_token_type_ids"]
        self.pad_id: int = facts["pad_id"]
        if facts["same_ids"]:
            self._backend = self._raw()
        self._same_chunking = bool(facts.get("same_chunking"))
        self._chunker: Any = None

    @property
    def backend(self) -> str:
        return "tokenizers" if self._backend is not None else "transformers"

    @property
    def chunker(self):
        """What the chunker measures text with: Transformers' tokenizer, or the same calls
        on the `tokenizers` library (`TokenizersCall`) where they were checked to give the
        same ids and character offsets."""
        if not self._same_chunking:
            return self.hf
        if self._chunker is None:
            self._chunker = TokenizersCall(self._raw(truncate=False))
        return self._chunker

    @property
    def hf(self):
        """Transformers' tokenizer, loaded on first use."""
        if self._hf is None:
            import transformers

            self._hf = transformers.AutoTokenizer.from_pretrained(
                str(self.description.path), local_files_only=True, trust_remote_code=False
            )
        return self._hf

    def tokenize(self, texts, truncate: bool = True) -> list[dict[str, list[int]]]:
        """`truncate=False`: every token of a single text (the query service counts and checks
        its inputs); pairs are always truncated. On the `tokenizers` backend where it was
        checked: truncated calls where the ids were, untruncated ones where the chunker's
        untruncated calls were."""
        if self._backend is not None and (truncate or self.kind == "cross-encoder"):
            return self._tokenize_raw(self._backend, texts)
        if self._backend is not None and self._same_chunking:
            return self._tokenize_raw(self.chunker.backend, texts)
        try:
            tokenizer = self._spares.get_nowait()
        except queue.Empty:
            tokenizer = copy.deepcopy(self.hf)
        try:
            return self._tokenize_with(tokenizer, texts, truncate)
        finally:
            self._spares.put(tokenizer)

    def _keys(self) -> list[str]:
        return ["input_ids"] + (["token_type_ids"] if self.uses_token_type_ids else [])

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
        keys = self._keys()
        return [{k: enc[k][i] for k in keys} for i in range(len(enc["input_ids"]))]

    def _tokenize_raw(self, backend, texts) -> list[dict[str, list[int]]]:
        items = [tuple(t) for t in texts] if self.kind == "cross-encoder" else list(texts)
        encodings = backend.encode_batch(items, add_special_tokens=True)
        if self.uses_token_type_ids:
            return [{"input_ids": e.ids, "token_type_ids": e.type_ids} for e in encodings]
        return [{"input_ids": e.ids} for e in encodings]

    # -- the tokenizers backend and its check ----------------------------------------
    def _raw(self, truncate: bool = True):
        """tokenizer.json in the `tokenizers` library, truncating as `hf`'s calls do (or,
        for the chunker, not at all)."""
        from tokenizers import Tokenizer as RawTokenizer

        backend = RawTokenizer.from_file(str(self.description.path / "tokenizer.json"))
        backend.no_padding()
        if truncate:
            backend.enable_truncation(max_length=self.max_seq_length, strategy="longest_first")
        else:
            backend.no_truncation()
        return backend

    def _key(self) -> str:
        """The tokenizer files, the sequence limit, the kind and both libraries' versions."""
        from corpusmill.model.files import _TOKENIZER_FILES

        digest = hashlib.sha256(f"v{FACTS_VERSION}:{self.kind}:{self.max_seq_length}".encode())
        for lib in ("transformers", "tokenizers"):
            try:
                digest.update(f"{lib}={metadata.version(lib)}".encode())
            except metadata.PackageNotFoundError:
                digest.update(f"{lib}=none".encode())
        for name in sorted({*_TOKENIZER_FILES, "vocab.txt"}):
            path = self.description.path / name
            if path.is_file():
                digest.update(name.encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()[:20]

    def _facts(self) -> dict[str, Any]:
        """What the engine reads of the tokenizer, from `hf`, and whether the `tokenizers`
        backend gives the same ids on the probe's texts (and on pairs for a
        cross-encoder), long ones truncated included."""
        from corpusmill.model.probe import CHECK_TEXTS

        hf = self.hf
        self.uses_token_type_ids = "token_type_ids" in hf.model_input_names
        facts: dict[str, Any] = {
            "fingerprint": tokenizer_fingerprint(
                self.description.path, hf.vocab_files_names.values(), self.max_seq_length
            ),
            "uses_token_type_ids": self.uses_token_type_ids,
            "pad_id": hf.pad_token_id or 0,
            "same_ids": False,
        }
        if not (self.description.path / "tokenizer.json").is_file():
            return facts
        texts: list = [*CHECK_TEXTS, " ".join(CHECK_TEXTS * 4), ""]
        if self.kind == "cross-encoder":
            texts = [(a, b) for a in texts for b in texts[-3:]]
        try:
            raw = self._tokenize_raw(self._raw(), texts)
            call = TokenizersCall(self._raw(truncate=False))
        except Exception:  # noqa: BLE001 (a file the library cannot read: use hf)
            return facts
        facts["same_ids"] = json.dumps(raw) == json.dumps(self._tokenize_with(hf, texts))
        if self.kind == "embedder":
            facts["same_chunking"] = _same_calls(call, hf, [*CHECK_TEXTS, " ".join(CHECK_TEXTS)])
        return facts


class TokenizersCall:
    """Transformers' tokenizer call, for the arguments the chunker passes (texts, with or
    without special tokens, ids and character offsets, no truncation), on the `tokenizers`
    library: the same Rust encodings Transformers' fast tokenizer reads them from, without
    importing Transformers."""

    def __init__(self, backend) -> None:
        self.backend = backend

    def __len__(self) -> int:
        """The vocabulary with added tokens, as `len()` of Transformers' tokenizer."""
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        processor = self.backend.post_processor
        return 0 if processor is None else int(processor.num_special_tokens_to_add(pair))

    def __call__(
        self,
        text,
        add_special_tokens: bool = True,
        return_offsets_mapping: bool = False,
        **_ignored,
    ) -> dict[str, Any]:
        single = isinstance(text, str)
        encodings = self.backend.encode_batch(
            [text] if single else list(text), add_special_tokens=add_special_tokens
        )
        out: dict[str, Any] = {"input_ids": [e.ids for e in encodings]}
        if return_offsets_mapping:
            out["offset_mapping"] = [e.offsets for e in encodings]
        return {k: v[0] for k, v in out.items()} if single else out


def _same_calls(call: TokenizersCall, hf, texts: list[str]) -> bool:
    """The chunker's calls give the same ids and offsets either way."""
    if call.num_special_tokens_to_add(pair=False) != hf.num_special_tokens_to_add(pair=False):
        return False
    for special in (False, True):
        a = call(texts, add_special_tokens=special, return_offsets_mapping=True)
        b = hf(texts, add_special_tokens=special, return_offsets_mapping=True)
        if a["input_ids"] != b["input_ids"]:
            return False
        if [list(map(tuple, o)) for o in a["offset_mapping"]] != [
            list(map(tuple, o)) for o in b["offset_mapping"]
        ]:
            return False
    return True
