"""Small datasets for the sweep: scikit-learn's bundled sets and seeded generated data."""

from __future__ import annotations

import numpy as np


def digits(n: int = 256):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data[:n] / 16.0).astype("float32")
    return x, d.target[:n].astype("int32")


def digits_images(n: int = 128):
    x, y = digits(n)
    return x.reshape(-1, 8, 8, 1), y


def wine():
    from sklearn.datasets import load_wine

    d = load_wine()
    rng = np.random.default_rng(1)
    order = rng.permutation(len(d.target))[:160]
    x = d.data[order].astype("float32")
    return (x - x.mean(0)) / x.std(0), d.target[order].astype("int32")


def breast_cancer(n: int = 256):
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    x = d.data[:n].astype("float32")
    return (x - x.mean(0)) / x.std(0), d.target[:n].astype("float32")


def regression(n: int = 192):
    from sklearn.datasets import make_regression

    x, y = make_regression(n_samples=n, n_features=10, noise=5.0, random_state=4)
    return x.astype("float32"), (y / y.std()).astype("float32")


def sequences(n: int = 192, length: int = 12, features: int = 3):
    """Noisy sequences; the label says whether the first feature's sum is positive."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(n, length, features)).astype("float32")
    return x, (x[:, :, 0].sum(1) > 0).astype("int32")


def tokens(n: int = 192, length: int = 10, vocab: int = 40, pad: bool = False):
    """Token ids (0 = padding when ``pad``); the label is whether low ids dominate."""
    rng = np.random.default_rng(6)
    x = rng.integers(1, vocab, size=(n, length)).astype("int32")
    if pad:
        lengths = rng.integers(3, length + 1, size=n)
        x[np.arange(length)[None, :] >= lengths[:, None]] = 0
    y = ((x > 0) & (x < vocab // 2)).sum(1) > ((x >= vocab // 2).sum(1))
    return x, y.astype("int32")


def token_tags(n: int = 128, length: int = 10, vocab: int = 40):
    """Padded token sequences with a tag per token (tag = id parity); 0 is padding."""
    x, _ = tokens(n, length, vocab, pad=True)
    return x, (x % 2).astype("int32")


def batches(x, y, batch: int, steps: int):
    """The batches fit(shuffle=False) sees, in order (x and y may be lists of arrays)."""
    out = []
    n = len(x[0]) if isinstance(x, list | tuple) else len(x)
    for i in range(steps):
        lo = (i * batch) % n
        sl = slice(lo, lo + batch)
        xb = [a[sl] for a in x] if isinstance(x, list | tuple) else x[sl]
        yb = [a[sl] for a in y] if isinstance(y, list | tuple) else y[sl]
        out.append((xb, yb))
    return out
