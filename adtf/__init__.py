"""adtf: image anomaly detection for industrial visual inspection, on Keras 3 and TensorFlow.

Five published methods behind one detector contract (see ``adtf.detectors``),
tf.data input pipelines (``adtf.data``), pretrained backbones that work offline
(``adtf.backbones``), metrics and working-point thresholds (``adtf.metrics``,
``adtf.thresholds``), evaluation with a report (``adtf.evaluate``) and SavedModel
export for TF Serving (``adtf.export``).
"""
import os as _os

# Keep TF quiet on import. TF leaves oneDNN off on CPUs without AVX-512 (AMD EPYC, say),
# where it still makes the frozen inference graphs ~1.6x faster (adtf.backbones.frozen);
# set TF_ENABLE_ONEDNN_OPTS=0 before importing adtf to opt out. Import adtf before TF for this to apply.
USER_TF_LOG_LEVEL = _os.environ.get("TF_CPP_MIN_LOG_LEVEL")  # the CLI quiets TF further unless this is "0"
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"

from adtf.errors import AdtfError, DataError, WeightsError  # noqa: E402,F401
