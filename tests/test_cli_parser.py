"""The arguments of each ``ppgen`` command: what each sub-parser accepts, its defaults, the function it
runs, and the arguments it refuses (argparse exits with status 2)."""

from __future__ import annotations

import argparse

import pytest

from ppgen.cli import catalogue, commands
from ppgen.cli.parser import _seed, build_parser
from ppgen.spec import MAX_SEED


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_each_command_runs_its_function():
    assert _parse("list").func is catalogue.cmd_list
    assert _parse("init", "vae").func is catalogue.cmd_init
    assert _parse("data", "fetch", "digits").func is catalogue.cmd_data_fetch
    assert _parse("fit", "vae").func is commands.cmd_fit
    assert _parse("sample", "run").func is commands.cmd_sample
    assert _parse("evaluate", "run").func is commands.cmd_evaluate
    assert _parse("diagnose", "run").func is commands.cmd_diagnose
    assert _parse("compare", "a", "b").func is commands.cmd_compare


def test_fit_arguments_and_defaults():
    a = _parse("fit", "models/vae.yaml", "-i", "pcd", "--set", "latent.dim=2", "--set", "inference.lr=0.1",
               "--epochs", "3", "-o", "runs/x", "--seed", "7", "--resume", "--no-figures", "--no-progress")
    assert (a.spec, a.inference, a.overrides, a.epochs, a.out, a.seed) == (
        "models/vae.yaml", "pcd", ["latent.dim=2", "inference.lr=0.1"], 3, "runs/x", 7)
    assert a.resume and a.no_figures and a.progress is False
    d = _parse("fit", "vae")
    assert (d.inference, d.overrides, d.epochs, d.seed, d.resume, d.device, d.devices, d.progress) == (
        None, [], None, None, False, "auto", 1, True)


def test_sample_evaluate_compare_defaults():
    s = _parse("sample", "r", "--given", "y=3", "--given", "z=0")
    assert (s.run, s.n, s.output, s.seed, s.given) == ("r", 64, None, 0, ["y=3", "z=0"])
    e = _parse("evaluate", "r", "--k", "50", "--no-quality", "--no-progress")
    assert (e.k, e.no_quality, e.progress, e.json, e.limit, e.seed) == (50, True, False, False, None, 0)
    assert _parse("evaluate", "r").progress is True
    c = _parse("compare", "a", "b", "c")
    assert (c.runs, c.output, c.json) == (["a", "b", "c"], "compare.png", False)


@pytest.mark.parametrize("argv", [
    [],
    ["frobnicate"],
    ["fit"],
    ["fit", "vae", "--epochs", "three"],
    ["fit", "vae", "--seed", "-1"],
    ["fit", "vae", "--seed", str(MAX_SEED + 1)],
    ["fit", "vae", "--colour"],
    ["sample", "r", "-n", "1.5"],
    ["evaluate", "r", "--seed", "x"],
    ["compare"],
    ["data"],
    ["data", "fetch"],
    ["diagnose"],
])
def test_refused_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        _parse(*argv)
    assert exc.value.code == 2
    assert "usage: ppgen" in capsys.readouterr().err


def test_the_seed_type():
    assert _seed("0") == 0 and _seed(str(MAX_SEED)) == MAX_SEED
    with pytest.raises(argparse.ArgumentTypeError, match=f"expected an integer from 0 to {MAX_SEED}, got -3"):
        _seed("-3")
    with pytest.raises(argparse.ArgumentTypeError, match="expected an integer, got '1e3'"):
        _seed("1e3")
    with pytest.raises(argparse.ArgumentTypeError, match="expected an integer, got 'xxxxxxxxxx"):
        _seed("x" * 100)


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """A parser and every sub-parser under it, at any depth."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _parsers(sub)
    return found


def test_no_parser_takes_an_abbreviated_option():
    parsers = _parsers(build_parser())
    assert len(parsers) == 10  # ppgen, its eight commands and data fetch
    assert all(p.allow_abbrev is False for p in parsers)


@pytest.mark.parametrize("argv, option", [
    (["fit", "vae", "--epoch", "1"], "--epoch"),
    (["evaluate", "r", "--ais-step", "10"], "--ais-step"),
    (["evaluate", "r", "--quality", "50"], "--quality"),
    (["fit", "vae", "--no-prog"], "--no-prog"),
    (["sample", "r", "--out", "x.png"], "--out"),
])
def test_a_misspelled_option_is_refused_with_its_name(argv, option, capsys):
    with pytest.raises(SystemExit) as exc:
        _parse(*argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: ppgen" in err and f"unrecognized arguments: {option}" in err


def test_the_full_spellings_are_still_read():
    assert _parse("fit", "vae", "--epochs", "1").epochs == 1
    e = _parse("evaluate", "r", "--ais-steps", "10", "--ais-runs", "3", "--quality-samples", "50")
    assert (e.ais_steps, e.ais_runs, e.quality_samples) == (10, 3, 50)
    assert _parse("fit", "vae", "--no-progress").progress is False
    assert _parse("sample", "r", "--output", "x.png").output == "x.png"
