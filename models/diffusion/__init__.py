"""DDPM on 2-D toys and 8x8 digits (Ho et al. 2020; Nichol and Dhariwal 2021).

data.py      moons, swiss roll, 8 gaussians, checkerboard, digits; train / held-out / floor splits
schedule.py  linear and cosine schedules, forward noising q(x_t | x_0), posterior, respacing
denoiser.py  residual MLP with sinusoidal time (and optional input) embedding
sampling.py  ancestral DDPM and deterministic DDIM samplers; eps / x0 / v parameterizations
metrics.py   sliced Wasserstein, RBF MMD, energy distance, and their noise floors
train.py     Config, the training step written once for one trial and for K (populations), `train`
"""
