"""adtf.atomic: outputs replace their old copy whole, and what a killed write left behind goes with the next one."""
import os

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
    (tmp_path / "saved_model").mkdir()  # the old copy was replaced: ".saved_model.old" is a leftover
    with atomic_path(tmp_path / "saved_model") as tmp:
        tmp.mkdir()
    write_json(tmp_path / "metrics.json", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".saved_model.keep-me", "metrics.json", "saved_model"]


def test_a_folder_whose_replacement_never_arrived_is_put_back(tmp_path):
    """Killed between atomic_path's two renames: the old SavedModel sits hidden as .saved_model.old and nothing
    at saved_model; the next write must not delete the only copy before its own replacement is in place."""
    (tmp_path / ".saved_model.old").mkdir()
    (tmp_path / ".saved_model.old" / "version").write_text("1")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "saved_model"):
        raise RuntimeError("this write fails too")
    assert (tmp_path / "saved_model" / "version").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved_model"]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads which file a descriptor is from /proc")
def test_what_is_published_was_flushed_to_disk_first(tmp_path, monkeypatch):
    """A rename can reach the disk before the data it names: each file is fsynced before its rename."""
    synced, replaced = [], []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append((str(a), len(synced))), real_replace(a, b)))
    with atomic_path(tmp_path / "model") as tmp:
        tmp.mkdir()
        (tmp / "weights").write_text("w")
    (published,) = [count for source, count in replaced if "/.model." in source]  # the rename into place
    assert any(path.endswith("/model/weights") for path in synced[:published]), synced
    assert str(tmp_path) in synced[published:]  # and the rename itself, in the folder's entries


def test_a_link_to_a_folder_keeps_pointing_at_the_new_copy(tmp_path):
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "old.txt").write_text("old")
    (tmp_path / "current").symlink_to("v1")
    with atomic_path(tmp_path / "current") as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert (tmp_path / "current").is_symlink() and sorted(p.name for p in (tmp_path / "current").iterdir()) == ["new.txt"]


def test_a_full_disk_names_the_output_it_was_writing(tmp_path):
    """write() and fsync() fail on a full disk with no file name: the CLI printed "No space left on device" alone."""
    import errno

    with pytest.raises(OSError) as caught, atomic_path(tmp_path / "metrics.json"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "metrics.json")
    assert list(tmp_path.iterdir()) == []


def test_a_library_s_full_disk_report_is_the_system_s_one_line_naming_the_output(tmp_path):
    """TensorFlow's SavedModel writer raised a 57-line OpError naming its hidden temporary file, and h5py an OSError
    with no errno whose text (a page of it) holds the system's words. A failure about another file passes as is."""
    import errno

    import tensorflow as tf

    def full_tensorflow(tmp):
        return tf.errors.ResourceExhaustedError(None, None, f"{tmp}/variables_temp/part-0; No space left on device")

    def full_h5py(tmp):
        return OSError(f"Can't synchronously write data (file write failed: filename = '{tmp}', errno = 28, error "
                       "message = 'No space left on device', ...)")

    for raised in (full_tensorflow, full_h5py):
        with pytest.raises(OSError) as caught, atomic_path(tmp_path / "saved_model") as tmp:
            raise raised(tmp)
        assert (caught.value.errno, caught.value.strerror, caught.value.filename) == (
            errno.ENOSPC, "No space left on device", str(tmp_path / "saved_model"))
    unreadable_input = tf.errors.PermissionDeniedError(None, None, "/data/in/0001.png; Permission denied")
    with pytest.raises(tf.errors.PermissionDeniedError), atomic_path(tmp_path / "saved_model"):
        raise unreadable_input
    with pytest.raises(ValueError), atomic_path(tmp_path / "model.keras") as tmp:  # not a library's write failure
        raise ValueError(f"{tmp}: No space left on device")
    assert list(tmp_path.iterdir()) == []
