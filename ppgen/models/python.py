"""The ``python`` family, your own Pyro model in a file or passed to ``ppgen.fit``: see
:mod:`ppgen.program.python`."""

from ppgen.program.python import PythonFamily

__all__ = ["PythonFamily"]
