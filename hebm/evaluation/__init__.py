"""What a trained model is measured by, and the evaluations of a checkpoint (``python -m
hebm.evaluate``):

* measures — :mod:`~hebm.evaluation.metrics` (Fréchet distance, active units, the prior hole,
  detection metrics), :mod:`~hebm.evaluation.scores` (the outlier scores and their choice),
  :mod:`~hebm.evaluation.hierarchy` (what each latent layer carries),
  :mod:`~hebm.evaluation.features` (the classifiers FD is measured in, FID);
* the evaluations of a checkpoint — :mod:`~hebm.evaluation.detection` (anomaly, OOD),
  :mod:`~hebm.evaluation.quality` (FD, the summary), :mod:`~hebm.evaluation.controllable`,
  :mod:`~hebm.evaluation.latents`, :mod:`~hebm.evaluation.samples` (what ``hebm.sample``
  draws beyond plain samples: the hierarchical grid, long-run chains, image sets);
* :mod:`~hebm.evaluation.figures` — image grids, scatters, profiles.

It sits above the models and below training (the trainer logs these measures).
"""
