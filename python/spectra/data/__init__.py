"""Data: the embedded zoo (:mod:`spectra.data.zoo`: tiny models, their corpus and tokenizer)."""
