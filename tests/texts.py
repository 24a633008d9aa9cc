"""Texts of very different lengths (2 to ~150 tokens), so one batch needs real padding:
what the engine's batching, invariance and precision tests run on, on a CPU and a GPU."""

MIXED_TEXTS = [
    "Short.",
    "A somewhat longer sentence about protein folding and the cells that do it.",
    " ".join(["Mitochondria are the powerhouse of the cell and they make ATP."] * 12),
    "Two words",
    " ".join(["Vaccines train the immune system to recognise a pathogen."] * 5),
]
