"""linecube: spatio-spectral representation learning on MaNGA emission-line cubes."""

__version__ = "0.1.0"
