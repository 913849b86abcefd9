"""Errors a user can act on.

Every failure that comes from the user's input (a bad image, a wrong folder, a missing backend) raises one of
these with a message that says what is wrong and what to do. The CLI prints the message without a traceback.
"""


class EdgevlError(Exception):
    """Base class: the message is meant for the user."""


class ImageError(EdgevlError):
    """An input image cannot be read or is unreasonable (corrupt, empty, too many pixels)."""


class CheckpointError(EdgevlError):
    """A checkpoint folder is not something we can convert (missing files, unknown architecture, pickles)."""


class ModelError(EdgevlError):
    """A converted model folder is missing, incomplete or damaged."""


class BackendUnavailable(EdgevlError):
    """An optional backend (llama-cpp-python, rapidocr, ...) is not installed or cannot load."""


class UnsupportedTask(EdgevlError):
    """The chosen engine cannot do the requested task (e.g. captioning with the classic OCR engine)."""


class EngineUnavailable(EdgevlError):
    """The engine cannot answer any request now (a remote server down or overloaded past the retries).

    Unlike a bad image, this is not about one request: a batch run stops on it instead of recording an error for
    every remaining image, and can be resumed later."""


class SchemaError(EdgevlError):
    """A JSON schema cannot be used to constrain an answer (not valid JSON Schema, or a feature the token-mask
    library's schema compiler does not support)."""
