"""Retrieval quality on labelled BEIR sets: metrics, the loader, and evaluation of a store."""
