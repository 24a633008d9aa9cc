"""The NumPy query forward (corpusmill/model/numpy_forward.py) and when `Model.embed_queries`
uses it: Transformers' own float32 model is the reference, and a cold query process must not
import torch (a subprocess each, since the point is what a fresh process imports)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel

from corpusmill.model import Model, ModelSpec
from corpusmill.model.card import PoolingSpec
from corpusmill.model.files import describe_model
from corpusmill.model.numpy_forward import NumpyBertEmbedder, unsupported
from corpusmill.model.pooling import pool

ROOT = Path(__file__).resolve().parents[2]
TEXTS = [
    "how do cells divide",
    "x",
    "A committee reviewed the budget, found two errors in the totals, and asked the office "
    "to resubmit the figures before the end of the month. " * 4,
]


def _reference(path: Path, items: list[dict], specs: list[PoolingSpec]) -> list[np.ndarray]:
    """Transformers' float32 model, one sequence at a time, pooled by the engine's `pool`
    as each spec says."""
    model = AutoModel.from_pretrained(str(path)).eval()
    rows: list[list[np.ndarray]] = [[] for _ in specs]
    with torch.inference_mode():
        for item in items:
            ids = torch.tensor([item["input_ids"]])
            types = torch.tensor([item.get("token_type_ids") or [0] * ids.shape[1]])
            hidden = model(input_ids=ids, token_type_ids=types).last_hidden_state
            for out, spec in zip(rows, specs, strict=True):
                out.append(pool(hidden, torch.ones_like(ids), spec)[0].numpy())
    return [np.stack(r) for r in rows]


@pytest.mark.parametrize("which", ["tiny", "minilm"])
def test_the_numpy_forward_computes_transformers_float32_vectors(
    which, tiny_embedder_path, minilm_path
):
    path = tiny_embedder_path if which == "tiny" else minilm_path
    model = Model(ModelSpec(path=str(path)))
    items = model.tokens.tokenize(TEXTS)
    specs = [PoolingSpec(m, normalize=m != "max") for m in ("mean", "cls", "max", "lasttoken")]
    for spec, want in zip(specs, _reference(path, items, specs), strict=True):
        got = NumpyBertEmbedder.from_description(model.description, spec).embed(items)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4, err_msg=spec.mode)


def test_token_type_ids_are_read(tiny_embedder_path):
    model = Model(ModelSpec(path=str(tiny_embedder_path)))
    item = model.tokens.tokenize(["two segments of a text"])[0]
    n = len(item["input_ids"])
    second = {"input_ids": item["input_ids"], "token_type_ids": [0] * (n // 2) + [1] * (n - n // 2)}
    forward = NumpyBertEmbedder.from_description(model.description)
    got = forward.embed([second])
    [want] = _reference(tiny_embedder_path, [second], [model.description.pooling])
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)
    assert not np.allclose(got, forward.embed([{"input_ids": item["input_ids"]}]), atol=1e-4)


def test_only_a_bert_encoder_is_read(tiny_embedder_path):
    config = describe_model(tiny_embedder_path).config
    assert unsupported(config, "embedder") == ""
    assert "not a BERT" in unsupported({**config, "model_type": "roberta"}, "embedder")
    assert "hidden_act" in unsupported({**config, "hidden_act": "gelu_new"}, "embedder")
    assert "position_embedding" in unsupported(
        {**config, "position_embedding_type": "relative_key"}, "embedder"
    )
    with pytest.raises(ValueError, match="not a BERT"):
        NumpyBertEmbedder({**config, "model_type": "roberta"}, {}, PoolingSpec("mean", True))


def _python(script: str) -> list:
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _queries_script(path: Path, texts: list[str], **spec) -> str:
    """A process that embeds `texts` with `embed_queries`, the tokenizer's facts read from
    the session's cache (`CORPUSMILL_CACHE_DIR`) as the CLI reads them from the user's."""
    return (
        "import json, os, sys\n"
        "from corpusmill.model import Model, ModelSpec\n"
        "cache = os.environ['CORPUSMILL_CACHE_DIR']\n"
        f"m = Model(ModelSpec(path={str(path)!r}, cache_dir=cache, **{spec!r}))\n"
        f"rows = m.embed_queries({texts!r})\n"
        "print(json.dumps(['torch' in sys.modules, m.loaded, rows.tolist()]))\n"
    )


def test_a_cold_query_imports_no_torch_and_matches_the_engine(tiny_embedder_path):
    script = _queries_script(tiny_embedder_path, TEXTS[:2])
    _python(script)  # the first process on a machine checks the tokenizer (Transformers)
    torch_imported, loaded, rows = _python(script)
    assert (torch_imported, loaded) == (False, False)
    engine = Model(ModelSpec(path=str(tiny_embedder_path))).embed(TEXTS[:2])
    cosines = (np.asarray(rows) * engine).sum(1)  # both normalised; the engine's in bf16
    assert cosines.min() >= 0.9999


def test_resident_weights_a_forced_forward_or_a_long_batch_go_through_the_engine(
    tiny_embedder_path, monkeypatch
):
    from corpusmill.model import model as model_module

    resident = Model(ModelSpec(path=str(tiny_embedder_path))).load()
    np.testing.assert_array_equal(resident.embed_queries(TEXTS), resident.embed(TEXTS))

    torch_imported, loaded, _ = _python(
        _queries_script(tiny_embedder_path, TEXTS[:1], forward="transformers")
    )
    assert (torch_imported, loaded) == (True, True)

    monkeypatch.setattr(model_module, "NUMPY_QUERY_TOKENS", 8)
    cold = Model(ModelSpec(path=str(tiny_embedder_path)))
    cold.embed_queries(TEXTS[:1])  # six tokens
    assert not cold.loaded
    cold.embed_queries(TEXTS)  # more than eight
    assert cold.loaded
