"""edgedistill: one teacher to distilled, quantized, exported students that fit a budget on named devices."""

__version__ = "0.1.0"
