"""ppgen.evaluate: the options each family declares, and nothing else."""

from __future__ import annotations

import pytest

import ppgen
from ppgen.evaluate import evaluate
from ppgen.spec import SpecError

RBM = {"family": "rbm", "hidden": 6, "data": {"name": "digits", "limit": 60, "batch_size": 20},
       "ais": {"runs": 4, "steps": 20}}
VAE = {"family": "vae", "latent": {"dim": 2}, "encoder": {"hidden": [8]}, "decoder": {"hidden": [8]},
       "data": {"name": "digits", "limit": 60, "batch_size": 20}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ppgen.Run]:
    base = tmp_path_factory.mktemp("evaluate")
    return {
        "rbm": ppgen.fit(RBM, None, epochs=1, out=base / "rbm", progress=False),
        "vae": ppgen.fit(VAE, None, epochs=1, out=base / "vae", progress=False),
    }


def test_a_misspelled_option_is_an_error_that_names_it(runs) -> None:
    with pytest.raises(SpecError, match=r"ais_step: not an option of evaluate for the rbm family; its options are "
                                        r"k, limit, batch_size, seed, write, progress, ais_runs, ais_steps, log_z_method"):
        evaluate(runs["rbm"], write=False, limit=5, ais_step=100)
    with pytest.raises(SpecError, match=r"chunk: not an option of evaluate for the vae family; its options are "
                                        r"k, limit, batch_size, seed, write, progress$"):
        evaluate(runs["vae"], write=False, limit=5, k=2, chunk=10)


def test_declared_options_reach_the_family(runs) -> None:
    res = evaluate(runs["rbm"], write=False, limit=5, log_z_method="ais", ais_runs=3, ais_steps=15)
    assert res["log_z_method"] == "ais"
    exact = evaluate(runs["rbm"], write=False, limit=5)  # 6 hidden units: enumerated
    assert exact["log_z_method"] == "exact"
    with pytest.raises(SpecError, match="log_z_method"):
        evaluate(runs["rbm"], write=False, limit=5, log_z_method="guess")
