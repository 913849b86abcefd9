"""edgevl: on-device vision-language models for OCR, tables and captions."""

__version__ = "0.1.0"
