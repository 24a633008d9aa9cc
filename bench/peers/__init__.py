"""The contenders corpusmill's engine is compared with (see bench/throughput.py)."""
