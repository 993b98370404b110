"""What the MLflow model reads from a request: rows -> image sources, under the server's
limits and path rule, so that any client can send images but none can make the server open,
or learn about, a file it was not configured to read.

A row carries its image in one of two columns:

* ``image``: the file's contents (PNG, JPEG or DICOM), base64-encoded: the normal input,
  decoded in memory by the one preprocessing (:class:`~squid_monai.transforms.EncodedImage`);
* ``path``: a file path. In-process, any path, read as
  :func:`squid_monai.transforms.preprocess` reads it. Inside MLflow's scoring server
  (``mlflow models serve``) refused unless ``allowed_root`` is configured; with it (served or
  not), only files inside that folder once symlinks are resolved, read as contents, so no
  message names a server path.

Too many images or bytes in one request raise an ``MlflowException`` with
``INVALID_PARAMETER_VALUE``, which the scoring server answers with HTTP 400 before decoding
anything. A bad row is a per-row reason ("row 2: ..."); the other rows are still scored.

No answer repeats the request: MLflow's scoring server quotes it in its HTTP 400 messages (the
request's DataFrame around a refusal, the body of a request that is not JSON), and images are
patient data. :func:`quiet_scoring_server`, installed when the model is loaded, keeps the
reason and drops the quotation.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from .transforms import DEFAULT_MAX_PIXELS, EncodedImage

__all__ = [
    "IMAGE_COLUMN",
    "PATH_COLUMN",
    "RequestRefused",
    "ServingConfig",
    "check_request",
    "quiet_scoring_server",
    "request_sources",
    "serving_environment",
]

IMAGE_COLUMN, PATH_COLUMN = "image", "path"
#: images in one request, by default
DEFAULT_MAX_IMAGES = 64
#: decoded image bytes in one request (and the largest file read under ``allowed_root``), by default
DEFAULT_MAX_REQUEST_BYTES = 128 * 2**20
#: model_config keys the model itself reads (the rest are :class:`ServingConfig` fields)
MODEL_KEYS = ("device",)
#: a message sharing this many consecutive characters with the request body quotes it
QUOTE_LENGTH = 16

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingConfig:
    """The request limits and the path rule, from the model's ``model_config``
    (``save_pyfunc(..., model_config=...)``, or at load time): ``max_images`` and
    ``max_request_bytes`` per request, ``max_pixels`` per image (refused before decoding),
    ``allowed_root`` the only folder ``path`` rows may read (``None``: none when served)."""

    max_images: int = DEFAULT_MAX_IMAGES
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    allowed_root: Path | None = None

    @classmethod
    def of(cls, config: Mapping[str, Any] | None, resolve_root: bool = True) -> ServingConfig:
        """Check ``config`` (unknown keys, non-positive limits); ``resolve_root``: resolve
        ``allowed_root`` and require the folder (at load time; not where the model is saved)."""
        values = {k: v for k, v in dict(config or {}).items() if k not in MODEL_KEYS}
        known = [f.name for f in fields(cls)]
        if unknown := sorted(set(values) - set(known)):
            raise ValueError(
                f"unknown model_config key(s) {unknown}; known: {sorted([*known, *MODEL_KEYS])}"
            )
        for key in ("max_images", "max_request_bytes", "max_pixels"):
            if key in values and (
                isinstance(values[key], bool) or not isinstance(values[key], int) or values[key] < 1
            ):
                raise ValueError(
                    f"model_config {key} must be a positive integer, got {values[key]!r}"
                )
        if (root := values.get("allowed_root")) is not None:
            root = Path(os.path.expanduser(os.fspath(root)))
            if resolve_root:
                if not root.is_dir():
                    raise ValueError(f"model_config allowed_root {str(root)!r}: not a folder")
                root = Path(os.path.realpath(root))
            values["allowed_root"] = root
        return cls(**values)

    def as_model_config(self) -> dict[str, Any]:
        """Every key, JSON-ready: saved with the model so that each can be overridden when it
        is loaded (MLflow drops load-time keys that the saved ``model_config`` lacks)."""
        return {
            f.name: str(v) if isinstance(v := getattr(self, f.name), Path) else v
            for f in fields(self)
        }


def serving_environment() -> bool:
    """Whether this process is MLflow's scoring server, by the flag its app sets
    (``scoring_server.init``); an MLflow without that flag counts as serving (paths then
    need ``allowed_root``), the safe side."""
    try:
        from mlflow.environment_variables import _MLFLOW_IS_IN_SERVING_ENVIRONMENT
    except ImportError:  # pragma: no cover - MLflow releases before the flag
        return True
    return bool(_MLFLOW_IS_IN_SERVING_ENVIRONMENT.get())


def check_request(frame: pd.DataFrame, config: ServingConfig) -> None:
    """Refuse, before decoding anything, a request without an image column, with more than
    ``max_images`` rows or more than ``max_request_bytes`` of image data."""
    if IMAGE_COLUMN not in frame.columns and PATH_COLUMN not in frame.columns:
        raise _bad_request(
            f"the request needs an '{IMAGE_COLUMN}' column (base64-encoded PNG, JPEG or DICOM file "
            f"contents) or a '{PATH_COLUMN}' column; other columns are ignored"
        )
    if len(frame) > config.max_images:
        raise _bad_request(
            f"the request has {len(frame)} images; this model accepts at most {config.max_images} per "
            "request (model_config max_images): send them in several requests"
        )
    if IMAGE_COLUMN in frame.columns:
        size = sum(len(v) * 3 // 4 for v in frame[IMAGE_COLUMN] if isinstance(v, str))
        if size > config.max_request_bytes:
            raise _bad_request(
                f"the request carries about {size} bytes of image data; this model accepts at most "
                f"{config.max_request_bytes} per request (model_config max_request_bytes): send the "
                "images in several requests"
            )


def request_sources(
    frame: pd.DataFrame, config: ServingConfig, served: bool
) -> Iterator[tuple[str, str | EncodedImage | None, str | None]]:
    """Per row, ``(name, source, None)`` or ``(name, None, reason)``; ``name`` is ``row <n>``
    (0-based, the request's order). One row is decoded at a time (bounded memory)."""
    images = frame[IMAGE_COLUMN] if IMAGE_COLUMN in frame.columns else [None] * len(frame)
    paths = frame[PATH_COLUMN] if PATH_COLUMN in frame.columns else [None] * len(frame)
    for n, (image, path) in enumerate(zip(images, paths)):
        name = f"row {n}"
        image, path = (None if _missing(v) else v for v in (image, path))
        try:
            if image is not None and path is not None:
                raise _RowError(f"give '{IMAGE_COLUMN}' or '{PATH_COLUMN}', not both")
            if image is not None:
                source = EncodedImage(_decode(image), name)
            elif path is not None:
                source = _path_source(str(path), name, config, served)
            else:
                raise _RowError(f"no image: '{IMAGE_COLUMN}' and '{PATH_COLUMN}' are both empty")
        except _RowError as err:
            yield name, None, str(err)
        else:
            yield name, source, None


class _RowError(ValueError):
    """Why one row cannot be read (it becomes that row's reason)."""


class RequestRefused(MlflowException):
    """A request refused as a whole (HTTP 400); its message is ours, whatever the scoring
    server prepends to it (:func:`quiet_scoring_server` restores it)."""

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)
        self.refusal = message


def _bad_request(message: str) -> MlflowException:
    return RequestRefused(message)


def quiet_scoring_server() -> None:
    """Make MLflow's scoring server answer errors without quoting the request: wraps its
    ``invocations`` (looked up by name at each request) once per process; harmless where no
    server runs. Our refusals keep their own message; MLflow's keep the reason and lose the
    quotation ("Failed to predict data '<the request>'", "Input: <the body>"); any other message
    that still shares :data:`QUOTE_LENGTH` characters with the body is withheld, and no stack
    trace goes back to the client (it is logged here)."""
    from mlflow.pyfunc import scoring_server

    if getattr(scoring_server.invocations, "_squid_quiet", False):
        return

    @functools.wraps(scoring_server.invocations)
    def invocations(data, *args, **kwargs):
        try:
            return answer(data, *args, **kwargs)
        except MlflowException as err:
            refused = isinstance(err, RequestRefused)
            err.message = err.refusal if refused else _unquoted(err.message, data)
            if (trace := err.json_kwargs.pop("stack_trace", None)) is not None:
                logger.warning("request failed (%s); traceback:\n%s", err.message, trace)
            raise

    answer = scoring_server.invocations
    invocations._squid_quiet = True
    scoring_server.invocations = invocations


def _unquoted(message: str, body: bytes | str) -> str:
    """``message`` without MLflow's quotations of the request ``body``
    (:func:`quiet_scoring_server`)."""
    predict, separator = "Failed to predict data '", "'. \nError: "
    if message.startswith(predict) and separator in message:
        message = message.rpartition(separator)[2]
    not_json = message.startswith("Invalid input. Ensure that input is a valid JSON")
    if not_json or "\nInput: \n" in message:
        return "Invalid input: the request body is not valid UTF-8 JSON"
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    window = 2**20  # quotations repeat the start of the request, or its end
    text = text[:window] + "\n" + text[-window:]
    if any(message[i : i + QUOTE_LENGTH] in text for i in range(len(message) - QUOTE_LENGTH + 1)):
        return (
            "Invalid input: the request cannot be read as a table of 'image' or 'path' rows "
            "(details withheld: they quote the request)"
        )
    return message


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def _decode(text: Any) -> bytes:
    if not isinstance(text, str):
        raise _RowError(f"'{IMAGE_COLUMN}' must be a base64 string, got {type(text).__name__}")
    try:
        return base64.b64decode(
            "".join(text.split()), validate=True
        )  # line breaks (base64 -w 76) are fine
    except (binascii.Error, ValueError) as err:
        raise _RowError(
            f"'{IMAGE_COLUMN}' is not valid base64 ({err}); file paths go in the '{PATH_COLUMN}' "
            "column"
        ) from None


def _path_source(path: str, name: str, config: ServingConfig, served: bool) -> str | EncodedImage:
    """A path row: as it is in-process without a root; else only a file inside the root,
    read into memory, with the same answer for a refused path whether or not it exists."""
    root = config.allowed_root
    if root is None:
        if served:
            raise _RowError(
                f"this server does not read file paths; send the file's contents base64-encoded in "
                f"the '{IMAGE_COLUMN}' column"
            )
        return path
    try:
        real = Path(os.path.realpath(root / path))  # an absolute path replaces the root
    except (OSError, ValueError):  # e.g. a NUL byte, a symlink loop
        real = None
    if real is None or (real != root and root not in real.parents):
        raise _RowError("path refused: outside the folder this model may read")
    try:
        if not real.is_file():
            raise _RowError("path not found under the allowed folder (or not a file)")
        if (size := real.stat().st_size) > config.max_request_bytes:
            raise _RowError(
                f"file of {size} bytes is larger than the limit of {config.max_request_bytes} bytes "
                "(model_config max_request_bytes)"
            )
        return EncodedImage(real.read_bytes(), name)
    except OSError as err:
        raise _RowError(f"file cannot be read ({type(err).__name__})") from None
