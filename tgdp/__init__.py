"""TGDP — Transfer Guided Diffusion Process, in pure PyTorch.

The maths of "Transfer Learning for Diffusion Models" (Ouyang et al., NeurIPS 2024): schedules,
data, models, losses, samplers, metrics and the training stages. Never imports ray or mlflow; the
study system in ``study/`` wraps these functions.
"""

__version__ = "0.1.0"
