"""adtf.atomic: outputs replace their old copy whole, and what a killed write left behind goes with the next one."""
import pytest

from adtf.atomic import atomic_path, write_json


def test_a_folder_is_replaced_whole_and_a_failed_write_keeps_the_old_one(tmp_path):
    target = tmp_path / "saved_model"
    for version in ("1", "2"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "version").write_text(version)
    assert (target / "version").read_text() == "2"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.mkdir()
        raise RuntimeError("killed half-way")
    assert (target / "version").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["saved_model"]


def test_a_write_removes_what_a_killed_one_left_beside_its_path(tmp_path):
    """A SIGKILL inside atomic_path skips its cleanup: a hidden temporary SavedModel stayed in the run folder."""
    for name in (".saved_model.mexxy22c", ".saved_model.old", ".metrics.json.k02p926l"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "big").write_text("x")
    (tmp_path / ".saved_model.keep-me").mkdir()  # not a name atomic_path makes
    with atomic_path(tmp_path / "saved_model") as tmp:
        tmp.mkdir()
    write_json(tmp_path / "metrics.json", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".saved_model.keep-me", "metrics.json", "saved_model"]
