"""Pictures to look through a CNN at, as ``convlens.inspect`` has always offered them.

They are read by the one input pipeline, ``convlens.inputs`` (built-in pictures, image and
DICOM files, uploaded bytes; the aspect check and the conversion to a model's input), which
sits below ``Run`` so that prediction and the explorer's uploads use it too; this module keeps
the names that ``convlens.inspect`` exports.
"""

from __future__ import annotations

from convlens.inputs import (
    BUILT_IN,
    MAX_ASPECT_CHANGE,
    PHOTOS,
    SMILEY,
    XRAY,
    is_dicom,
    load_picture,
    picture_for_model,
    read_dicom,
)

__all__ = [
    "BUILT_IN",
    "MAX_ASPECT_CHANGE",
    "PHOTOS",
    "SMILEY",
    "XRAY",
    "is_dicom",
    "load_picture",
    "picture_for_model",
    "read_dicom",
]
