"""``ppgen list`` and ``ppgen COMMAND --help``: descriptions in whole sentences, and run-folder paths that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ppgen import zoo
from ppgen.cli import main


def test_list_keeps_abbreviations_inside_thefirst_sentence(capsys) -> None:
    """"sec.", "Fig.", "e.g.", "i.e.", "et al." do not end a sentence; the zoo's flow_digits and adversarial
    entries cite "sec. 4.1" and "sec. 3" in their first sentence."""
    assert main(["list"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "(Dinh et al. 2017, sec. 4.1)." in out
    assert "(Goodfellow et al. 2014, sec. 3) and DCGAN's Adam." in out
    models, recipes = zoo.folder("models"), zoo.folder("inference")
    assert zoo.describe(models / "flow_digits.yaml").endswith("onto [0, 1] (Dinh et al. 2017, sec. 4.1).")
    assert zoo.describe(recipes / "adversarial.yaml") == ("Adversarial training with the non-saturating generator "
                                                          "loss (Goodfellow et al. 2014, sec. 3) and DCGAN's Adam.")


@pytest.mark.parametrize("text, first", [
    ("A model (see Fig. 2 of Smith et al. 2020, e.g. the left panel). More.",
     "A model (see Fig. 2 of Smith et al. 2020, e.g. the left panel)."),
    ("Samples, i.e. draws from p(x), in Sec. 3. The rest.", "Samples, i.e. draws from p(x), in Sec. 3."),
    ("By D. P. Kingma and M. Welling. Later.", "By D. P. Kingma and M. Welling."),
    ("Ends with eq. 4 etc. and goes on. Second.", "Ends with eq. 4 etc. and goes on."),
    ("A sentence ends here. Not this one.", "A sentence ends here."),
    ("No full stop at all", "No full stop at all"),
])
def test_the_first_sentence_does_not_end_at_an_abbreviation(tmp_path: Path, text: str, first: str) -> None:
    from ppgen.cli.output import first_sentence

    assert first_sentence(text + "\n\nAnother paragraph.") == first
    f = tmp_path / "m.yaml"
    words = text.split()
    f.write_text("".join(f"# {' '.join(words[i:i + 3])}\n" for i in range(0, len(words), 3)) + "family: vae\n")
    assert zoo.describe(f) == first  # the same, broken over comment lines anywhere


def _help_texts() -> dict[str, str]:
    from ppgen.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    return {"ppgen": parser.format_help(), **{name: sub.format_help() for name, sub in commands.items()}}


def test_every_run_folder_path_in_the_help_exists_in_a_run_folder(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "vae.yaml"
    spec.write_text("family: vae\nlatent: {dim: 2}\nencoder: {hidden: [8]}\ndecoder: {hidden: [8]}\n"
                    "data: {name: digits, limit: 60, batch_size: 20}\n")
    run = tmp_path / "run"
    assert main(["fit", str(spec), "--epochs", "1", "--out", str(run), "--no-figures"]) == 0
    assert main(["sample", str(run), "-n", "4"]) == 0
    assert main(["evaluate", str(run), "--limit", "5", "--k", "2", "--no-progress"]) == 0
    assert main(["diagnose", str(run)]) == 0
    capsys.readouterr()
    helps = _help_texts()
    paths = {p.rstrip(".,;)") for text in helps.values() for p in re.findall(r"RUN/[\w./<>-]+", " ".join(text.split()))}
    assert {"RUN/spec.yaml", "RUN/checkpoints/last.pt", "RUN/evaluation.json", "RUN/idata.nc", "RUN/figures/",
            "RUN/figures/samples-N.png"} <= paths
    for p in sorted(paths):
        where = run / p.removeprefix("RUN/").replace("samples-N", "samples-4")
        assert where.exists(), f"{p} named in the help is not in a run folder"
    assert "RUN/last.pt" not in " ".join(helps.values())
