"""Image file contents held in memory (an upload to the served model), and the size limit
every decoder checks before it decodes pixels.

An :class:`EncodedImage` goes through the same readers and checks as a file on disk
(:func:`squid_monai.transforms.reading.read_radiograph`); only how its format is found
differs: by the content's signature, since it has no file name.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from squid_monai.transforms.errors import RadiographError

#: Largest image decoded, in pixels: 8192 x 8192, far above a 43 cm detector at 0.1 mm
#: (4300 pixels a side) and below Pillow's own decompression-bomb warning (89 million).
DEFAULT_MAX_PIXELS = 8192 * 8192
#: Formats an in-memory image may have, by their signature.
ENCODED_FORMATS = ("PNG", "JPEG", "DICOM")
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"


@dataclass(frozen=True)
class EncodedImage:
    """The bytes of one PNG, JPEG or DICOM file, named for messages by ``name`` (e.g. the
    request row it came in); never written to disk."""

    data: bytes = field(repr=False)
    name: str = "<bytes>"

    def open(self) -> io.BytesIO:
        return io.BytesIO(self.data)


def has_dicom_marker(head: bytes) -> bool:
    """Whether ``head`` (a file's first 132 bytes or more) has the DICOM preamble and ``DICM``."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def encoded_format(image: EncodedImage) -> str:
    """``"pil"`` (PNG, JPEG) or ``"dicom"`` by the content's signature; raise for anything else."""
    data = image.data
    if not data:
        raise RadiographError(image.name, "empty file (0 bytes)")
    if data.startswith((_PNG, _JPEG)):
        return "pil"
    if has_dicom_marker(data[:132]):
        return "dicom"
    raise RadiographError(
        image.name,
        "unsupported content: not a PNG, JPEG or DICOM file (DICOM needs its 128-byte preamble and "
        "the 'DICM' marker)",
    )


def check_pixels(name: str, rows: int, cols: int, max_pixels: int | None) -> None:
    """Refuse an image whose header claims more than ``max_pixels`` pixels, before any pixel
    is decoded: a small file can claim a huge image (a decompression bomb)."""
    if max_pixels is not None and rows * cols > max_pixels:
        raise RadiographError(
            name,
            f"image of {rows} x {cols} pixels is larger than the limit of {max_pixels} pixels; refused "
            "before decoding (max_pixels sets the limit)",
        )
