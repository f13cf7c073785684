"""Jobs: one folder per job kind (``profile``, ``capture``, ``dynamics``, ``geometry``,
``plasticity``, ``sweep``): ``run`` is the single-machine job behind its ``spectra`` command and
``kind`` its declaration for the engines (``spectra run CONFIG.yaml``)."""
