"""Training runs (``python -m hebm.train``):

* :mod:`~hebm.training.trainer` — :class:`~hebm.training.trainer.Trainer`, the loop;
* :mod:`~hebm.training.settings` — a run's configs from flat settings, the stage-1 run of a
  two-stage or attribute run;
* :mod:`~hebm.training.run_directory` — the run's files, its lock and their faults;
* :mod:`~hebm.training.distributed` — data parallel training under ``torchrun``;
* :mod:`~hebm.training.protocol` — the anomaly protocol: train per held-out digit and seed,
  then score.

It sits above the evaluation measures, which the trainer logs.
"""
