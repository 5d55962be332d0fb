"""linecube: spatio-spectral representation learning on MaNGA emission-line cubes.

From Python, open a finished run with :class:`linecube.Run` (``linecube.run``).
"""

__version__ = "0.1.0"

_LAZY = ("Run", "Galaxy", "RunError", "marvin_url", "skyserver_url")


def __getattr__(name: str):
    """``linecube.Run`` and friends, imported on first use (``import linecube`` stays light)."""
    if name in _LAZY:
        from linecube import run

        return getattr(run, name)
    raise AttributeError(f"module 'linecube' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
