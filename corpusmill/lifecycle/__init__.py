"""Model generations over time: which generations a run keeps in sync (`targets`), whether
one may go live (`readiness`, `gate`), and the operator's actions on them (`operations`:
promote, rollback, drop, describe). The registry they act on, and every write, are in
`corpusmill.store.generations`."""
