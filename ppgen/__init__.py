"""ppgen: a probabilistic-programming suite of generative models on PyTorch and Pyro.

Define a model declaratively (``models/*.yaml`` or a spec built in Python), fit it with an inference
recipe (``inference/*.yaml``) and inspect what it learned (samples, likelihoods, ArviZ diagnostics).
"""

import pyro as _pyro

# Parameters live in the modules that own them, never in Pyro's global param store: two models in one
# notebook cannot share or overwrite each other's weights.
_pyro.settings.set(module_local_params=True)

from ppgen.api import Run, build, fit, load_recipe, load_spec, open_run  # noqa: E402
from ppgen.spec import SpecError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["build", "fit", "load_spec", "load_recipe", "open_run", "Run", "SpecError", "__version__"]
