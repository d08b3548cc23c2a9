"""Training plumbing around the model: checkpoints, logs, loggers, sweep summaries."""
