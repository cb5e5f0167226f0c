"""gradtrace: record every optimizer step of a TensorFlow/Keras training run.

Usage::

    import gradtrace

    @gradtrace.trace(run="tape-loop", project="digits")
    def train():
        ...  # tape loops, tf.function steps and model.fit() inside are traced

    with gradtrace.trace(run="fit", project="digits"):
        model.fit(x, y, epochs=3)

Records go to ``$GRADTRACE_URL`` (or ``store=``): ``sqlite:///path.db`` (the
default is ``./gradtrace.db``) or an ``http(s)://`` gradtrace server. Importing
this package does not import TensorFlow; entering ``trace`` does.
"""

from gradtrace._trace import Run, trace

__version__ = "0.1.0"

__all__ = ["Run", "trace", "__version__"]
