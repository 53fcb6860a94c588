"""The comparison programs: every method once, at fixed configs, without a study (no Ray, Optuna or MLflow).

    gmm       ``tgdp-study gmm``           the Gaussian-mixture comparison (``study.programs.gmm``)
    ecg       ``tgdp-study ecg``           the ECG comparison (``study.programs.ecg``)
    ecg_sim   ``tgdp-study make-ecg-sim``  write a simulated ECG data set (``study.programs.ecg_sim``)

They own their command-line options and the files they write; the maths they run is in ``tgdp/``.
``study/cli.py`` imports a program only when its command runs, so ``--help`` and ``ls`` stay free of torch.
"""
