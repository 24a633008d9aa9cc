"""The models of a store's generations: the configured one, and others found by their card.

A reader answers from the live generation and a writer keeps every generation it serves in
sync, so either may need a model other than the configured one: the model that wrote a
generation is the only one whose query vectors may be compared with its table. The pool
finds it by the generation's card, trying in turn the configured model, the local path the
generation recorded, and the packaged default; each candidate is checked against the card
(files only, no weights), and each model is built once and shared (thread-safe: the query
service pins a generation per request).
"""

from __future__ import annotations

import threading
from pathlib import Path

from corpusmill.errors import ModelMismatchError
from corpusmill.model.card import ModelCard
from corpusmill.model.model import Model


class ModelPool:
    """Models by card. `base` is the configured model: its spec (device, dtype, budget)
    is the one every other model of the pool is built with, on another path."""

    def __init__(self, base: Model) -> None:
        self.base = base
        self._models: dict[str, Model] = {}  # as_metadata JSON -> model
        self._made: list[Model] = []  # built here: released by `release`
        self._lock = threading.Lock()

    def for_card(self, card: ModelCard, path: str | None, *, what: str = "") -> Model:
        """The model whose card is `card`; `path` is where its generation recorded it.
        Refused with the fix when no candidate has that card."""
        key = _key(card)
        with self._lock:
            if key in self._models:
                return self._models[key]
            if _key(self.base.card) == key:
                self._models[key] = self.base
                return self.base
            tried = [self.base.path]
            for candidate in (path, ""):
                if candidate is None or (candidate and not Path(candidate).is_dir()):
                    if candidate:
                        tried.append(f"{candidate} (missing)")
                    continue
                model = Model(self.base.spec.with_(path=candidate, model_id=""))
                try:
                    found = model.card
                except Exception:  # noqa: BLE001 (an unreadable folder is just not it)
                    tried.append(f"{candidate} (unreadable)")
                    continue
                if _key(found) == key:
                    self._models[key] = model
                    self._made.append(model)
                    return model
                tried.append(candidate or "the packaged default")
        raise ModelMismatchError(
            f"the model of {what or 'this generation'} ({card.model_id} @ {card.revision}, "
            f"{card.dimension}-d) is not at any known path (tried {', '.join(tried)}); set "
            "CORPUSMILL_MODEL to its folder once (e.g. for `corpusmill generations list`), "
            "which records the path"
        )

    def release(self) -> None:
        """Drop the weights of every model this pool built (not the base's)."""
        with self._lock:
            for model in self._made:
                model.release()


def _key(card: ModelCard) -> str:
    import json

    return json.dumps(card.as_metadata(), sort_keys=True)
