"""Metrics: per-token attention metrics measured in the forward pass
(:func:`spectra.metrics.profile.profile`), their token-level correlations and summaries."""
