"""Settings every test shares. Area fixtures live in each tests/<area>/conftest.py."""

from __future__ import annotations

import os

# Quiet, CPU-only, deterministic TensorFlow; set before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# Production swallows tracer-internal errors (one warning, run marked partial);
# tests turn that around so a tracer bug fails the test that hit it.
os.environ["GRADTRACE_STRICT"] = "1"
# Never let a test write into the developer's ./gradtrace.db by accident.
os.environ.pop("GRADTRACE_URL", None)
