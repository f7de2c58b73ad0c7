"""Kinema: video compression network, spacetime patches and a text-conditioned diffusion
transformer, after the Sora technical report."""

from kinema.errors import KinemaError, VideoError

__version__ = "0.1.0"
__all__ = ["KinemaError", "VideoError", "__version__"]
