"""LocoProp trainer: local-loss optimization (LocoProp-S, LocoProp-M) vs backprop baselines.

Amid, Anil, Warmuth, "LocoProp: Enhancing BackProp via Local Loss Optimization",
AISTATS 2022, https://arxiv.org/abs/2106.06199.

    data.py        scikit-learn's 8x8 digits, fixed train/test split
    nets.py        the architectures: layer sizes, activations, init, flat layout
    locoprop.py    the math, for R members at once: forward, backward, targets, local steps
    config.py      Config: fields, defaults, validation
    population.py  members as rows of one batched model (train() is a population of one)
    train.py       the objective `train(config, *, device, seed, report)`

Imports go one way: train -> population -> locoprop -> nets; config -> locoprop.
Optimizers: models/functional_optim.py (TF1 rules, as the official notebook).
"""
