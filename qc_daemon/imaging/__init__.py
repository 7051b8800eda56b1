"""Imaging: DICOM series to 3-D volumes (``convert``) and the preprocessing shared with training (``preprocess``).

The package itself imports nothing heavy, so ``qc_daemon.imaging.preprocess`` stays cheap to import for training;
the conversion contract lives in :mod:`qc_daemon.imaging.convert`.
"""
