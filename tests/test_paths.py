"""ppgen.paths: the checks on where ppgen may write, each a SpecError naming the flag before any work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ppgen.paths import check_output_file, check_output_folder
from ppgen.spec import MAX_ECHO, SpecError

PICS = (".png", ".pdf")


def test_a_new_file_in_folders_still_to_be_made_is_accepted_and_nothing_is_made(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "s.png"
    assert check_output_file(str(target), "-o", PICS) == target
    assert list(tmp_path.iterdir()) == []


def test_the_suffix_is_compared_lower_case_and_a_wrong_one_lists_those_accepted(tmp_path: Path) -> None:
    assert check_output_file(tmp_path / "S.PDF", "-o", PICS) == tmp_path / "S.PDF"
    with pytest.raises(SpecError) as err:
        check_output_file(tmp_path / "s.txt", "-o", PICS)
    assert str(err.value) == f"-o {tmp_path / 's.txt'}: expected a file ending in .png, .pdf"
    with pytest.raises(SpecError, match="expected a file ending in .png"):
        check_output_file(tmp_path / "png", "-o", PICS)  # a name without a suffix


def test_an_existing_file_may_be_overwritten(tmp_path: Path) -> None:
    (tmp_path / "old.png").write_bytes(b"x")
    assert check_output_file(tmp_path / "old.png", "-o", PICS) == tmp_path / "old.png"


def test_a_folder_of_that_name_is_refused_with_a_file_name_to_use(tmp_path: Path) -> None:
    (tmp_path / "pics.png").mkdir()
    with pytest.raises(SpecError) as err:
        check_output_file(tmp_path / "pics.png", "-o", PICS)
    assert str(err.value) == f"-o {tmp_path / 'pics.png'}: is a folder; give a file name, e.g. {tmp_path / 'pics.png' / 'samples.png'}"


@pytest.mark.parametrize("depth", [0, 2])
def test_a_file_anywhere_above_the_target_is_named(tmp_path: Path, depth: int) -> None:
    (tmp_path / "afile").write_text("x")
    below = tmp_path / "afile" / Path(*["d"] * depth) if depth else tmp_path / "afile"
    with pytest.raises(SpecError) as err:
        check_output_file(below / "s.png", "-o", PICS)
    assert f"{tmp_path / 'afile'} is a file, not a folder, so no file can be made under it" in str(err.value)
    with pytest.raises(SpecError) as err:
        check_output_folder(below / "run", "--out")
    assert str(err.value) == (f"--out {below / 'run'}: {tmp_path / 'afile'} is a file, not a folder, so no folder "
                              "can be made under it; choose another --out")


def test_a_dangling_link_is_named_with_where_it_points(tmp_path: Path) -> None:
    os.symlink(tmp_path / "nowhere.png", tmp_path / "link.png")
    with pytest.raises(SpecError) as err:
        check_output_file(tmp_path / "link.png", "-o", PICS)
    assert str(err.value) == (f"-o {tmp_path / 'link.png'}: is a link to {tmp_path / 'nowhere.png'}, which does not "
                              "exist; remove the link or choose another -o")
    (tmp_path / "nowhere.png").write_bytes(b"")  # the link now leads somewhere: accepted
    assert check_output_file(tmp_path / "link.png", "-o", PICS) == tmp_path / "link.png"


def test_a_name_of_255_bytes_is_accepted_and_one_of_256_refused(tmp_path: Path) -> None:
    assert check_output_folder(tmp_path / ("a" * 255), "--out") == tmp_path / ("a" * 255)
    with pytest.raises(SpecError, match="--out .*: a name in it is longer than 255 bytes; choose another --out"):
        check_output_folder(tmp_path / ("a" * 256), "--out")
    # Bytes, not characters: a name of 130 characters, 126 of them two-byte letters, is 256 bytes.
    assert check_output_file(tmp_path / ("é" * 125 + ".png"), "-o", PICS)  # 250 + 4 bytes
    with pytest.raises(SpecError, match="longer than 255 bytes"):
        check_output_file(tmp_path / ("é" * 126 + ".png"), "-o", PICS)  # 252 + 4 bytes


def test_a_path_that_cannot_be_encoded_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as err:
        check_output_file(str(tmp_path / "bad\ud800.png"), "-o", PICS)
    assert str(err.value) == "-o: the path cannot be encoded for this file system; choose another -o"


def test_the_nearest_existing_folder_must_be_writable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The check asks os.access (which says yes to root whatever the mode bits): a folder it refuses is named.
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    asked: list[Path] = []

    def access(path: object, mode: int, **kw: object) -> bool:
        asked.append(Path(path))  # type: ignore[arg-type]
        return Path(path) != locked and real_access(path, mode, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)
    with pytest.raises(SpecError) as err:
        check_output_file(locked / "new" / "deeper" / "s.png", "-o", PICS)
    assert str(err.value) == f"-o {locked / 'new' / 'deeper' / 's.png'}: {locked} is not writable; choose another -o"
    with pytest.raises(SpecError, match=f"{locked} is not writable; choose another --out"):
        check_output_folder(locked, "--out")
    (tmp_path / "s.png").write_bytes(b"")
    asked.clear()
    assert check_output_file(tmp_path / "s.png", "-o", PICS) == tmp_path / "s.png"
    assert asked == [tmp_path]  # an existing file's folder is checked, not the file


def test_a_relative_path_is_checked_from_the_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert check_output_folder("runs/new", "--out") == Path("runs/new")
    Path("runs").write_text("x")
    with pytest.raises(SpecError, match="runs is a file, not a folder"):
        check_output_folder("runs/new", "--out")


def test_a_folder_may_exist_but_a_file_of_its_name_may_not(tmp_path: Path) -> None:
    assert check_output_folder(tmp_path, "--out") == tmp_path
    (tmp_path / "run").write_text("x")
    with pytest.raises(SpecError) as err:
        check_output_folder(tmp_path / "run", "--out")
    assert str(err.value) == f"--out {tmp_path / 'run'}: a file of that name exists; choose another --out"


def test_a_long_path_is_cut_short_in_the_message(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    deep = tmp_path / "afile" / Path(*["d" * 200] * 10) / "s.png"
    with pytest.raises(SpecError) as err:
        check_output_file(deep, "-o", PICS)
    message = str(err.value)
    assert "is a file, not a folder" in message and len(message) < 2 * MAX_ECHO + 150
    assert str(deep) not in message and str(deep)[: MAX_ECHO - 3] + "..." in message


def test_a_path_longer_than_the_system_allows_is_refused_naming_the_flag(tmp_path: Path) -> None:
    # Each name is short enough; the whole path is over Linux's 4096 bytes, so the file system refuses to look.
    deep = tmp_path / Path(*["d" * 200] * 25)
    with pytest.raises(SpecError, match="^--out .*: File name too long; choose another --out$"):
        check_output_folder(deep, "--out")
    with pytest.raises(SpecError, match="^-o .*: File name too long; choose another -o$"):
        check_output_file(deep / "s.png", "-o", PICS)
