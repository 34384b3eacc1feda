"""The one exception family for user errors.

Anything the user can fix (a bad path, an unreadable file, a missing optional package, a bundle
made for another GPU) raises a subclass of :class:`LumbarEdgeError`. The CLI prints those as one
line without a traceback; anything else is a bug and keeps its traceback (in a batch, the study
that met it fails as :class:`UnexpectedStudyError`, its traceback logged, and the others go on).
"""


class LumbarEdgeError(Exception):
    """Base class of all errors caused by input or environment, not by a bug."""


class InputError(LumbarEdgeError):
    """A path or argument given by the user cannot be used."""


class DicomError(LumbarEdgeError):
    """A DICOM file or series cannot be read or used."""


class UnexpectedStudyError(LumbarEdgeError):
    """A study of a batch met a defect of lumbar-edge, not of its input: it is reported as one
    failed study naming the exception (whose traceback is logged), and the batch goes on."""


class MissingDependencyError(LumbarEdgeError):
    """An optional package is needed; the message names the extra that installs it."""

    def __init__(self, what: str, packages: "list[str] | tuple[str, ...]", extra: str, how: "str | None" = None):
        # ``how`` replaces the pip hint for what pip cannot install (a CUDA toolkit's nvcc).
        self.what = what
        self.packages = tuple(packages)
        self.extra = extra
        super().__init__(
            f"{what} needs {', '.join(self.packages)}: "
            + (how if how is not None else f"install it with `pip install 'lumbar-edge[{extra}]'`")
        )
