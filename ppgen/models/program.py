"""The ``program`` family, a model written in the model language: see :mod:`ppgen.program`."""

from ppgen.program.family import ProgramFamily

__all__ = ["ProgramFamily"]
