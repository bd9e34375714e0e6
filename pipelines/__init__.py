"""Everything `dvc repro` runs: one module per stage, pure functions plus thin entry points."""
