"""ppgen.evaluation.evaluate: the options each family declares, and nothing else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import ppgen
from ppgen.evaluation.evaluate import evaluate
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


def test_sample_quality_is_sized_by_a_flag_or_skipped(tmp_path, monkeypatch, capsys) -> None:
    """``quality_samples`` / ``--quality-samples N`` sets the sample count of the image metrics; ``quality=False``
    / ``--no-quality`` skips them; both bounded and exclusive."""
    import numpy as np

    from ppgen.evaluation import quality
    from ppgen.cli import main

    run = _image_run(tmp_path, monkeypatch)
    sized = evaluate(run, k=2, limit=10, quality_samples=12, write=False)
    assert sized["quality_samples"] == 12 and "fid_classifier" in sized
    skipped = evaluate(run, k=2, limit=10, quality=False, write=False)
    assert not {"fid_classifier", "precision", "quality_samples"} & set(skipped)
    assert skipped["test_nll_nats"] == sized["test_nll_nats"]
    for bad in (9, 100_001, True, 2.5):
        with pytest.raises(SpecError, match="quality_samples: expected 10 to 100000"):
            evaluate(run, quality_samples=bad, write=False)
    with pytest.raises(SpecError, match="given with quality=False"):
        evaluate(run, quality=False, quality_samples=50, write=False)
    assert main(["evaluate", str(run.path), "--k", "2", "--limit", "10", "--no-quality", "--json"]) == 0
    assert "fid_classifier" not in capsys.readouterr().out
    assert main(["evaluate", str(run.path), "--no-quality", "--quality-samples", "50"]) == 2
    assert "given with quality=False" in capsys.readouterr().err


def test_compare_shows_how_each_number_was_made_and_flags_the_incomparable(tmp_path, capsys) -> None:
    from ppgen.cli import main
    from ppgen.evaluation.compare import incomparable, table

    spec = {"family": "vae", "latent": {"dim": 2}, "encoder": {"hidden": [8]}, "decoder": {"hidden": [8]},
            "data": {"name": "digits", "batch_size": 64, "limit": 128}}
    a = ppgen.fit(spec, {"routine": "svi"}, epochs=1, out=tmp_path / "a", progress=False)
    b = ppgen.fit(spec, {"routine": "svi"}, epochs=1, out=tmp_path / "b", seed=1, progress=False)
    evaluate(a, k=3, limit=20)
    evaluate(b, k=3, limit=20)
    rows = table([ppgen.open_run(a.path), ppgen.open_run(b.path)])
    assert [(r["n_test"], r["k"], r["data"]) for r in rows] == [(20, 3, "digits binarize=dynamic limit=128")] * 2
    assert [r["estimator"] for r in rows] == ["importance sampling, k=3"] * 2
    assert incomparable(rows) == []
    evaluate(b, k=3, limit=30)
    rows = table([ppgen.open_run(a.path), ppgen.open_run(b.path)])
    (note,) = incomparable(rows)
    assert "different numbers of test examples (n_test 20, 30)" in note
    # the table itself marks both NLLs (and the bits/dim and ELBOs over the same test sets), the reason under it
    for r in rows:
        assert set(r["not_comparable"]) == {"test_nll_nats", "bits_per_dim", "elbo"}
        assert r["not_comparable"]["test_nll_nats"] == [note.split(": ", 1)[1]]
    assert main(["compare", str(a.path), str(b.path), "-o", str(tmp_path / "c.png")]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert "n_test" in lines[0].split()
    for line, r in zip(lines[1:3], rows):
        assert f"{r['test_nll_nats']:.4g} [1]" in line and f"{r['elbo']:.4g} [1]" in line
    assert lines[3:5] == ["not comparable:", f"[1] {note}"]
    assert main(["compare", str(a.path), str(b.path), "-o", str(tmp_path / "c.png"), "--json"]) == 0
    captured = capsys.readouterr()
    assert [r["not_comparable"] for r in json.loads(captured.out)] == [r["not_comparable"] for r in rows]
    assert "not comparable: test_nll_nats" in captured.err


def test_compare_flags_numbers_made_by_different_estimators(tmp_path) -> None:
    """A GMM's plug-in NLL at its MAP estimate beside the same model's NLL under other estimators is flagged;
    toy data sets of other sizes are other data."""
    from ppgen.evaluation.compare import estimator, incomparable

    rows = [{"test_nll_nats": 1.2, "n_test": 20, "data": "toymix distribution=blobs3 n=200",
             "estimator": estimator({"likelihood": "plug-in density at the point estimate (MAP)"})},
            {"test_nll_nats": 1.3, "n_test": 20, "data": "toymix distribution=blobs3 n=200",
             "estimator": estimator({"likelihood": "posterior predictive density averaged over 100 posterior draws"})}]
    (note,) = incomparable(rows)
    assert "different estimators" in note and "plug-in density at the point estimate (MAP)" in note
    assert estimator({"k": 5}) == "importance sampling, k=5" and estimator({}) == "exact"
    assert estimator({"log_z_method": "ais"}) == "free energy + log Z (ais)"
    rows[1] = {**rows[0], "data": "toymix distribution=blobs3 n=1000"}
    assert any("different data" in n for n in incomparable(rows))


def test_bits_per_dim_only_where_the_likelihood_is_of_discrete_values(runs, tmp_path) -> None:
    """bits/dim of a continuous density (a GB-RBM on grey levels, a Gaussian HMM, a GMM) mean nothing: those
    report nats per value and say why; binary data, grey-level PixelCNNs, categorical HMMs keep bits/dim."""
    import math

    from ppgen.data.core import DataInfo
    from ppgen.evaluation.evaluate import NO_BITS_PER_DIM, likelihood_is_discrete
    from ppgen.models.bayesian.hmm import HMM
    from ppgen.models.bayesian.hmm_spec import HMMSpec

    binary = evaluate(runs["rbm"], write=False, limit=10)
    assert binary["bits_per_dim"] == pytest.approx(binary["test_nll_nats"] / (64 * math.log(2)))
    assert "bits_per_dim_omitted" not in binary and "test_nll_nats_per_dim" not in binary
    spec = {"family": "gbrbm", "hidden": 4, "data": {"name": "digits", "binarize": "none", "limit": 60, "batch_size": 20}}
    gb = evaluate(ppgen.fit(spec, None, epochs=1, out=tmp_path / "gb", progress=False), write=False, limit=10)
    assert "bits_per_dim" not in gb
    assert gb["test_nll_nats_per_dim"] == pytest.approx(gb["test_nll_nats"] / 64)
    assert gb["bits_per_dim_omitted"] == NO_BITS_PER_DIM and "continuous" in NO_BITS_PER_DIM
    gaussian = HMM(HMMSpec(states=2, emission={"kind": "gaussian"}, data={"name": "toyseq"}), DataInfo((5, 1), "continuous"))
    dice = HMM(HMMSpec(states=2, emission={"kind": "categorical", "symbols": 6}, data={"name": "toyseq"}),
               DataInfo((5, 1), "continuous"))
    assert not likelihood_is_discrete(gaussian) and likelihood_is_discrete(dice)
    gmm = ppgen.build(ppgen.load_spec({"family": "gmm", "components": 2, "data": {"name": "toymix"}}),
                      DataInfo((2,), "continuous"))
    pixel = ppgen.build(ppgen.load_spec({"family": "pixelcnn", "data": {"name": "digits", "binarize": "none"}}),
                        DataInfo((1, 8, 8), "continuous"))
    assert not likelihood_is_discrete(gmm) and likelihood_is_discrete(pixel)


def test_evaluate_says_what_it_will_compute_and_which_metrics_fit_the_data(runs, tmp_path, monkeypatch, capsys) -> None:
    """Before the work: the test examples x importance samples and the quality samples on stderr (with a
    progress bar, or when the work is long), never on --json's stdout; the digit classifier's metrics on
    28x28 data that are not MNIST come with a note, and data without quality metrics say so."""
    import json

    import numpy as np

    from ppgen.evaluation import evaluate as evaluate_mod
    from ppgen.evaluation import quality
    from ppgen.cli import main

    run = _image_run(tmp_path, monkeypatch)
    capsys.readouterr()
    res = evaluate(run, k=2, limit=10, quality_samples=12, write=False, progress=True)
    err = capsys.readouterr().err
    assert "ppgen evaluate: 10 test examples x 2 importance samples = 20 likelihood terms; 12 samples for the " \
           "sample-quality metrics" in err
    assert "fid_classifier" in res and res["quality_note"].startswith("fid_classifier, kid_classifier")
    assert "a classifier of MNIST digits, but these data are 'npz' from" in res["quality_note"]
    assert res["quality_note"] in err
    assert main(["evaluate", str(run.path), "--k", "2", "--limit", "10", "--quality-samples", "12", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["quality_note"] == res["quality_note"]  # stdout is the JSON alone
    assert "not how close they are to these data" in err
    # Small work without a bar: silent; the same work counted as long: said.
    plain = evaluate(runs["rbm"], write=False, limit=5)
    assert capsys.readouterr().err == ""
    assert plain["quality_note"].startswith("no sample-quality metrics for these data ('digits', one example 1x8x8)")
    monkeypatch.setattr(evaluate_mod, "LONG_WORK", 50)
    evaluate(runs["rbm"], write=False, limit=5, ais_runs=3, ais_steps=15)
    assert capsys.readouterr().err == "ppgen evaluate: 5 test examples; log Z exactly where it is small enough, else by " \
                                      "AIS with 3 runs x 15 steps\n"
    assert "quality_note" not in evaluate(runs["rbm"], write=False, limit=5, quality=False)


def _image_run(tmp_path: Path, monkeypatch: Any) -> Any:
    """A one-epoch VAE on 120 random 28x28 binary images of the user's own (an npz), with an untrained digit
    classifier for the quality metrics (the tests never train the MNIST classifier)."""
    import numpy as np

    from ppgen.evaluation import feature_classifier, quality

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "img.npz", x=(rng.random((120, 1, 28, 28)) < 0.2).astype(np.float32))
    spec = {"family": "vae", "latent": {"dim": 2}, "encoder": {"hidden": [8]}, "decoder": {"hidden": [8]},
            "data": {"name": "npz", "path": str(tmp_path / "img.npz"), "batch_size": 40, "binarize": "static"}}
    run = ppgen.fit(spec, {"routine": "svi"}, epochs=1, out=tmp_path / "run", progress=False)
    clf = feature_classifier.DigitClassifier()
    monkeypatch.setattr(quality, "classifier", lambda: clf)
    return run


def test_importance_samples_are_drawn_in_chunks_that_stay_small(runs, monkeypatch) -> None:
    """The VAE's importance-sampling estimate holds at most CHUNK_VALUES values of x times samples at once (a
    25,000 x 784 chunk ran at half the speed of a 2,500 x 784 one), whatever k."""
    import torch

    from ppgen.models.base import CHUNK_VALUES, importance_chunk

    assert importance_chunk(100 * 784) == 25 and importance_chunk(10) == 250 and importance_chunk(10**9) == 1
    vae = runs["vae"].model
    rows: list[int] = []
    likelihood = vae.likelihood
    monkeypatch.setattr(vae, "likelihood", lambda z: (rows.append(z.shape[0]), likelihood(z))[1])
    x = torch.bernoulli(torch.full((2000, 1, 8, 8), 0.3))
    vae.log_likelihood(x, k=40)
    assert sum(rows) == 40 and max(rows) * 2000 * 64 <= CHUNK_VALUES and rows[0] == importance_chunk(2000 * 64)
