"""The model object: a `ModelSpec` (plain values) and the resident `Model` built from it."""

from corpusmill.model.card import ModelCard
from corpusmill.model.model import LOADS, Model
from corpusmill.model.spec import ModelSpec

__all__ = ["LOADS", "Model", "ModelCard", "ModelSpec"]
