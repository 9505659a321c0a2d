"""The benchmark's own file formats: tau-bench v1 and tau2 results files.

* :mod:`rollout.interop.records` reads either format into
  :class:`~rollout.interop.records.Trajectory` records, checking each
  record and reporting each bad one with its position;
* :mod:`rollout.interop.importing` writes them as the rollout datasets
  (``taugym import``);
* :mod:`rollout.interop.rescoring` replays them through ``TauEnv`` and
  scores them again (``taugym rescore``);
* :mod:`rollout.interop.exporting` writes a TauGym run as tau2 ``Results``
  files (``taugym export``).
"""
