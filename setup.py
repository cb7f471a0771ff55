"""adtf: anomaly detection for industrial visual inspection on Keras 3 / TensorFlow."""
from setuptools import setup

setup()
