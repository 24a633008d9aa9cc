"""Small corpora shared by the dagster.materialize tests."""


def write_corpus(root, n_docs: int, min_sentences: int):
    """`n_docs` small text files whose words make each one findable (topicN, item N*j)."""
    root.mkdir()
    for i in range(n_docs):
        words = " ".join(
            f"topic{i} sentence {j} about item {i * j}." for j in range(min_sentences + i)
        )
        (root / f"doc{i:02d}.txt").write_text(words)
    return root
