"""Data: the token windows the profile-style jobs run on (:mod:`~spectra.data.windows`) and the
examples the capture jobs run on (:mod:`~spectra.data.examples`). The embedded models and their
corpus are in :mod:`spectra.models.zoo`."""
