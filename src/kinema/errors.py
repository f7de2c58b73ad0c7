"""The one error type for mistakes a user can make. The CLI prints its message and exits 2."""


class KinemaError(Exception):
    """Bad input or a missing resource, with a message that says what to do."""


class VideoError(KinemaError):
    """A file that cannot be read or written as a video or image; the message names the file."""
