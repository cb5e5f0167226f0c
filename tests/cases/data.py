"""Small real datasets shipped with scikit-learn (nothing is downloaded)."""

from __future__ import annotations

import numpy as np


def digits(n: int = 512):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data[:n] / 16.0).astype("float32")
    y = d.target[:n].astype("int32")
    return x, y


def iris():
    from sklearn.datasets import load_iris

    d = load_iris()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(d.target))
    x = d.data[order].astype("float32")
    x = (x - x.mean(0)) / x.std(0)
    return x, d.target[order].astype("int32")


def classification(n: int = 384, features: int = 20, classes: int = 2):
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=n, n_features=features, n_informative=8, n_classes=classes,
                               random_state=3)
    return x.astype("float32"), y.astype("int32")


def regression(n: int = 256):
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    x = d.data[:n].astype("float32") * 10
    y = d.target[:n].astype("float32")
    return x, (y - y.mean()) / y.std()


def batches(x, y, batch: int, steps: int):
    """The batches fit(shuffle=False) sees, in order."""
    out = []
    i = 0
    while len(out) < steps:
        lo = (i * batch) % len(x)
        if lo + batch > len(x):
            i, lo = 0, 0
        out.append((x[lo:lo + batch], y[lo:lo + batch]))
        i += 1
    return out


def tagged_sequences(n: int = 256, length: int = 12, vocab: int = 20, tags: int = 3, seed: int = 5):
    """Padded token sequences (0 = padding, lengths 3..length) and a tag per token.

    A tag depends on the token and its predecessor, so a recurrent tagger has something to learn.
    """
    rng = np.random.default_rng(seed)
    x = np.zeros((n, length), dtype="int32")
    y = np.zeros((n, length), dtype="int32")
    for i in range(n):
        k = int(rng.integers(3, length + 1))
        tok = rng.integers(1, vocab, size=k)
        x[i, :k] = tok
        y[i, :k] = (tok + np.concatenate([[0], tok[:-1]])) % tags
    return x, y


def sample_weights(n: int = 384, seed: int = 6):
    """Per-sample weights as a user derives them (e.g. from label confidence): 0.2..2.0."""
    return np.random.default_rng(seed).uniform(0.2, 2.0, size=n).astype("float32")


def wine(n: int = 160):
    """Raw wine measurements (13 columns on very different scales: ~0.1 to ~1000), shuffled."""
    from sklearn.datasets import load_wine

    d = load_wine()
    order = np.random.default_rng(0).permutation(len(d.target))
    return d.data[order][:n].astype("float32"), d.target[order][:n].astype("int32")
