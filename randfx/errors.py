"""Exception types shared across randfx."""


class ArtifactError(Exception):
    """A randfx artifact was refused: corrupt, truncated, or made for another model,
    seed, generator version or randfx version. The message names what differs."""
