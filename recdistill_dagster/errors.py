"""The error every stage raises when a partition cannot be produced: the message says which
partition, why, and what to do; the asset layer turns it into one readable paragraph."""


class PipelineStepError(RuntimeError):
    """A partition cannot be produced; the message names the partition and the reason."""
