"""async-image-classifier: a job API over Redis Streams, dispatchers and NVIDIA Triton."""

__version__ = "1.0.0"
