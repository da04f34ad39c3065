"""LocoProp trainer: local-loss optimization (LocoProp-S, LocoProp-M) vs backprop baselines.

Amid, Anil, Warmuth, "LocoProp: Enhancing BackProp via Local Loss Optimization",
AISTATS 2022, https://arxiv.org/abs/2106.06199.

    data.py      scikit-learn's 8x8 digits, fixed train/test split
    nets.py      dense nets with per-layer (input, pre-activation, output); flat params
    optim.py     SGD / RMSprop / Adam on the flat parameter tensor (TF1 update rules)
    locoprop.py  targets, the batched K-step local phase, the backprop step
    train.py     Config and the objective `train(config, *, device, seed, report)`
"""
