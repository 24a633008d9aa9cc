"""The batch engine: token-budget, length-sorted batches through a resident encoder, with
tokenising, the forward pass and writing overlapped in three stages."""
