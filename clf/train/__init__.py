"""Training engine: epoch loop, evaluation, fit (resume, early stop, DDP), history and the runs table."""
