"""The model language: any directed generative model, declared.

A program is a spec of ``family: program`` (YAML, a dict, or :class:`ProgramSpec`) that declares named
sample sites in order, each with a distribution whose parameters are constants, learnable parameters,
network outputs or small expressions of earlier sites; local sites live in the data plate and global ones
outside it; observed sites are bound to the data's ``x`` and ``y``; discrete latents are summed out by
enumeration; the guide is declared in the same language or built (``auto``, ``delta``).

- :mod:`ppgen.program.schema`: the spec and its structural checks;
- :mod:`ppgen.program.expr`: expressions, parsed and evaluated from a whitelist, never executed;
- :mod:`ppgen.program.dists`: the distributions a site may have;
- :mod:`ppgen.program.networks`: declared networks;
- :mod:`ppgen.program.compile`: shapes, networks and parameters against the data;
- :mod:`ppgen.program.compiled`: the compiled program, its sites and its parameter modules;
- :mod:`ppgen.program.guides`: the automatic guides, written out in the language;
- :mod:`ppgen.program.sites`: a pass's values, the labels of a batch, each site evaluated;
- :mod:`ppgen.program.passes`: one pass, the guide then the model, giving every term of the bound;
- :mod:`ppgen.program.objective`: the fused bound, importance weights, each example's ELBO;
- :mod:`ppgen.program.sampling`: ancestral and posterior draws, a point of the guide;
- :mod:`ppgen.program.pyro_model`: the Pyro model and guide;
- :mod:`ppgen.program.family`: the registered ``program`` family.
"""

from ppgen.program.schema import ProgramSpec

__all__ = ["ProgramSpec"]
