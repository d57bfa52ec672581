"""TensorFlow baselines: `tf_dense` (full softmax) and `tf_sampled` (sampled softmax, lazy Adam).

Importing this package does not import TensorFlow; the engines do so in `set_threads`/`prepare`.
"""

from engines.tf.engine import TFDenseEngine, TFSampledEngine

__all__ = ["TFDenseEngine", "TFSampledEngine"]
