"""ppgen: a probabilistic-programming suite of generative models on PyTorch and Pyro.

Define a model declaratively (``models/*.yaml`` or a spec built in Python), fit it with an inference
recipe (``inference/*.yaml``) and inspect what it learned (samples, likelihoods, ArviZ diagnostics).

Importing ppgen changes no global setting of Pyro, matplotlib or torch. Parameters live in the modules
that own them; ppgen's own inference leaves Pyro's global param store as it found it, and a family's
``model``/``guide`` expose their parameters to Pyro as ``param`` sites, so plain ``pyro.infer.SVI``
trains a ppgen model under Pyro's default settings.
"""

from ppgen.api import Run, build, fit, load_recipe, load_spec, open_run
from ppgen.spec import SpecError

__version__ = "0.1.0"
__all__ = ["build", "fit", "load_spec", "load_recipe", "open_run", "Run", "SpecError", "__version__"]
