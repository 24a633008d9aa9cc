"""The batch engine: token-budget, length-sorted batches through a resident encoder, with
tokenising, the forward pass and writing overlapped in three stages (a small input runs
them in the calling thread), and the micro-batcher in front of it for texts that arrive
one at a time (the query service)."""
