"""Astrophysics the pipeline rests on: MaNGA's spatial covariance (``noise``),
Galactic extinction (``extinction``), BPT demarcations (``bpt``)."""
