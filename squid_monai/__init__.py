"""SQUID for unsupervised anomaly detection in chest radiographs, built on MONAI."""

__version__ = "0.1.0"
