"""adtf: image anomaly detection for industrial visual inspection, on Keras 3 and TensorFlow.

Five published methods behind one detector contract (see ``adtf.detectors``),
tf.data input pipelines (``adtf.data``), pretrained backbones that work offline
(``adtf.backbones``), metrics and working-point thresholds (``adtf.metrics``,
``adtf.thresholds``), evaluation with a report (``adtf.evaluate``) and SavedModel
export for TF Serving (``adtf.export``).
"""
import os as _os

# TensorFlow Probability on Keras 3 needs the tf-keras shim; keep TF quiet on import.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

from adtf.errors import AdtfError, DataError, WeightsError  # noqa: E402,F401
