"""adtf.data.cifar: CIFAR-10/100 as distributed (pickled and binary, folder and archive), the one-class protocol,
and pickles that ask for more than arrays."""
import io
import os
import pickle
import shutil
import struct
import tarfile

import numpy as np
import pytest

from adtf.data import load, parse_spec
from adtf.data.cifar import CIFAR10_NAMES
from adtf.errors import DataError


def _batches(n_per_batch, n_batches, seed, n_classes=10):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n_per_batch * n_batches, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(n_per_batch * n_batches) % n_classes
    return images, labels


def _rows(images):
    """The files' row layout: the red plane, then green, then blue."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def _py2_pickle(obj):
    """Byte-string keys and an array pickled by numpy, protocol 2, as the official files are (written by Python 3
    here; ``_python2_pickle`` below writes what Python 2 wrote, opcode for opcode)."""
    return pickle.dumps(obj, protocol=2)


def _python2_pickle(rows, labels):
    """What Python 2's cPickle (protocol 2) wrote for ``{'data': uint8 array, 'labels': [...]}``: every str a
    BINSTRING, the array's bytes one too, which Python 3 reads back as bytes (``encoding="bytes"``)."""
    def text(b):
        return b"T" + struct.pack("<i", len(b)) + b
    shape = b"(" + b"".join(b"J" + struct.pack("<i", n) for n in rows.shape) + b"t"
    out = b"\x80\x02}(" + text(b"data")
    out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + text(b"b") + b"\x87R"
    out += b"(K\x01" + shape + b"cnumpy\ndtype\n" + text(b"u1") + b"K\x00K\x01\x87R"
    out += b"(K\x03" + text(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89" + text(rows.tobytes()) + b"tb"
    out += text(b"labels") + b"](" + b"".join(b"K" + bytes([label]) for label in labels) + b"eu."
    return out


def write_cifar10_python(root, train, test, names=CIFAR10_NAMES, with_train=True):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    if with_train:
        for i, (images, labels) in enumerate(zip(np.array_split(train[0], 5), np.array_split(train[1], 5)), 1):
            (folder / f"data_batch_{i}").write_bytes(_py2_pickle(
                {b"batch_label": b"training batch", b"labels": labels.tolist(), b"data": _rows(images),
                 b"filenames": [b"x.png"] * len(labels)}))
    (folder / "test_batch").write_bytes(_py2_pickle({b"labels": test[1].tolist(), b"data": _rows(test[0])}))
    (folder / "batches.meta").write_bytes(_py2_pickle({b"label_names": [n.encode() for n in names],
                                                       b"num_vis": 3072}))
    return folder


def write_cifar10_binary(folder, train, test):
    folder.mkdir(parents=True)
    for i, (images, labels) in enumerate(zip(np.array_split(train[0], 5), np.array_split(train[1], 5)), 1):
        records = np.concatenate([labels[:, None].astype(np.uint8), _rows(images)], axis=1)
        (folder / f"data_batch_{i}.bin").write_bytes(records.tobytes())
    records = np.concatenate([test[1][:, None].astype(np.uint8), _rows(test[0])], axis=1)
    (folder / "test_batch.bin").write_bytes(records.tobytes())
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES) + "\n\n")
    return folder


def test_cifar10_python_one_class_protocol(tmp_path):
    train, test = _batches(10, 5, seed=0), _batches(20, 1, seed=1)
    folder = write_cifar10_python(tmp_path, train, test)
    for spec in (f"cifar:{folder}:cat", f"cifar:{tmp_path}", str(folder)):  # the folder, its parent, detected
        ds = load(spec, normal_class=3)
        assert ds.name == "cifar10:cat" and not ds.has_masks
        # Training: the normal class's training images, in file order; testing: the whole test file.
        assert [s.index for s in ds.train] == np.flatnonzero(train[1] == 3).tolist()
        assert len(ds.test) == 20 and sum(s.label == 0 for s in ds.test) == 2
        np.testing.assert_array_equal(ds.arrays[[s.index for s in ds.train]], train[0][train[1] == 3])
        np.testing.assert_array_equal(ds.arrays[[s.index for s in ds.test]], test[0])  # red, green, blue planes
        assert {s.defect for s in ds.test} == {"good"} | set(CIFAR10_NAMES) - {"cat"}
    assert parse_spec(f"cifar:{folder}:7")[2] == {"normal_class": "7"}
    assert load(f"cifar:{folder}:7").name == "cifar10:horse"


def test_cifar_pickle_as_python2_wrote_it(tmp_path):
    test = _batches(20, 1, seed=10)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = _python2_pickle(_rows(test[0]), test[1].tolist())
    assert (pickle.loads(data, encoding="bytes")[b"data"] == _rows(test[0])).all()  # numpy itself reads it so
    (folder / "test_batch").write_bytes(data)
    ds = load(f"cifar:{folder}", normal_class=4)
    np.testing.assert_array_equal(ds.arrays, test[0])
    # No meta file: CIFAR-10's own names. Both deer (class 4) of the test file train (round(0.8 * 2)).
    assert [s.defect for s in ds.test[:5]] == ["airplane", "automobile", "bird", "cat", "dog"]


def test_cifar10_binary_and_archive_read_the_same_images(tmp_path):
    train, test = _batches(10, 5, seed=2), _batches(20, 1, seed=3)
    python = load(f"cifar:{write_cifar10_python(tmp_path / 'py', train, test)}")
    binary_folder = write_cifar10_binary(tmp_path / "bin" / "cifar-10-batches-bin", train, test)
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(binary_folder, arcname="cifar-10-batches-bin")
    downloads = tmp_path / "downloads"  # the folder the archive was downloaded to, holding it alone: once refused
    downloads.mkdir()
    shutil.copy(archive, downloads)
    for ds in (load(f"cifar:{binary_folder}"), load(str(archive)), load(f"cifar:{downloads}"), load(str(downloads))):
        assert ds.name == python.name == "cifar10:airplane"
        assert [(s.path, s.label, s.defect) for s in ds.test] == [(s.path, s.label, s.defect) for s in python.test]
        np.testing.assert_array_equal(ds.arrays, python.arrays)


def test_cifar_test_split_alone_is_split_by_seed(tmp_path):
    test = _batches(50, 1, seed=4)
    folder = write_cifar10_python(tmp_path, None, test, with_train=False)
    ds = load(f"cifar:{folder}", normal_class=1, train_fraction=0.6)
    assert len(ds.train) == 3 and len(ds.test) == 47 and sum(s.label == 0 for s in ds.test) == 2
    assert all(s.path.startswith("cifar10/test/") for s in ds.train + ds.test)
    assert [s.path for s in load(f"cifar:{folder}", normal_class=1, seed=1, train_fraction=0.6).train] != \
        [s.path for s in ds.train]


def test_cifar100_coarse_and_fine_labels(tmp_path):
    images, fine = _batches(40, 1, seed=5, n_classes=100)
    coarse = fine % 20
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for split in ("train", "test"):
        (folder / split).write_bytes(_py2_pickle({b"data": _rows(images), b"fine_labels": fine.tolist(),
                                                  b"coarse_labels": coarse.tolist()}))
    (folder / "meta").write_bytes(_py2_pickle({b"fine_label_names": [f"f{i}".encode() for i in range(100)],
                                               b"coarse_label_names": [f"c{i}".encode() for i in range(20)]}))
    ds = load(f"cifar:{folder}", normal_class="c2")
    assert ds.name == "cifar100:c2" and len(ds.train) == 2 and {s.defect for s in ds.test} - {"good"} < \
        {f"c{i}" for i in range(20)}
    assert load(f"cifar:{folder},labels=fine,normal_class=5").name == "cifar100:f5"
    with pytest.raises(DataError, match="labels='medium'"):
        load(f"cifar:{folder},labels=medium")


class _Exploit:
    def __reduce__(self):
        return os.system, ("echo pwned",)


def test_cifar_pickle_that_names_other_globals_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"labels": [0], b"data": _Exploit()}, protocol=2))
    with pytest.raises(DataError, match=r"test_batch: refused to load: it asks for (posix|os|nt)\.system"):
        load(f"cifar:{folder}")
    # An array of Python objects (whose state is more pickle) is refused too, as is a numpy subclass.
    (folder / "test_batch").write_bytes(pickle.dumps({b"labels": [0], b"data": np.array([None])}, protocol=2))
    with pytest.raises(DataError, match="test_batch: refused to load: it asks for the dtype 'O8'"):
        load(f"cifar:{folder}")
    (folder / "test_batch").write_bytes(pickle.dumps({b"labels": [0], b"data": np.ma.zeros(3)}, protocol=2))
    with pytest.raises(DataError, match="refused to load: it asks for numpy.ma"):
        load(f"cifar:{folder}")
    for state in (b"}U\x01xK\x01s", b"N}U\x01xK\x01s\x86"):  # BUILD on numpy.ndarray: a dict, a slot state
        (folder / "test_batch").write_bytes(b"\x80\x02cnumpy\nndarray\n" + state + b"b.")
        with pytest.raises(DataError, match="refused to load: it sets state on numpy.ndarray itself"):
            load(f"cifar:{folder}")


def test_cifar_bad_files_are_named(tmp_path):
    train, test = _batches(10, 5, seed=6), _batches(20, 1, seed=7)
    binary = write_cifar10_binary(tmp_path / "cifar-10-batches-bin", train, test)
    (binary / "test_batch.bin").write_bytes((binary / "test_batch.bin").read_bytes()[:-5])
    with pytest.raises(DataError, match=r"test_batch.bin: 61455 bytes is not a whole number of 3073-byte"):
        load(f"cifar:{binary}")
    (binary / "data_batch_3.bin").unlink()
    with pytest.raises(DataError, match="4 of the 5 training files"):
        load(f"cifar:{binary}")
    python = write_cifar10_python(tmp_path / "py", train, test)
    (python / "test_batch").write_bytes(_py2_pickle({b"labels": [0], b"data": np.zeros((1, 5), np.uint8)}))
    with pytest.raises(DataError, match=r"test_batch: 'data' is not an \[N, 3072\] uint8 array"):
        load(f"cifar:{python}")
    (python / "test_batch").write_bytes(b"\x80\x02}q\x00")  # cut short
    with pytest.raises(DataError, match="test_batch: not a readable CIFAR pickle"):
        load(f"cifar:{python}")
    (python / "test_batch").write_bytes(_py2_pickle({b"labels": test[1].tolist(), b"data": _rows(test[0])}))
    with pytest.raises(DataError, match="normal_class='tiger' must be a class index 0-9 or one of airplane"):
        load(f"cifar:{tmp_path / 'py'}:tiger")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no CIFAR files"):
        load(f"cifar:{tmp_path / 'empty'}")
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="cifar-10-python.tar.gz: not a readable CIFAR archive"):
        load(str(tmp_path / "cifar-10-python.tar.gz"))


def test_cifar_runs_through_the_pipeline(tmp_path):
    import adtf.data

    train, test = _batches(10, 5, seed=8), _batches(20, 1, seed=9)
    ds = load(f"cifar:{write_cifar10_python(tmp_path, train, test)}")
    images, labels, _, _ = next(iter(adtf.data.pipeline(ds.test, arrays=ds.arrays, image_size=(32, 32),
                                                         batch_size=4)))
    assert images.shape == (4, 32, 32, 3) and labels.numpy().tolist() == [s.label for s in ds.test[:4]]


def test_cifar_manifest_checks_a_copy(tmp_path):
    from adtf.data import verify

    train, test = _batches(10, 5, seed=11), _batches(20, 1, seed=12)
    report = verify(f"cifar:{write_cifar10_python(tmp_path, train, test)}", config="cifar10")
    assert not report.ok  # a 70-image fake, not the 60,000 images of CIFAR-10
    assert "train: expected 5000, found 5" in report.differences and "test_good: expected 1000, found 2" in \
        report.differences


def test_cifar_pickles_cannot_make_more_than_they_hold(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    # Each list holds the one before it twice: 40 levels in a few hundred bytes would unfold to 2**40 items.
    dag = b"]q\x000" + b"".join(b"h" + bytes([i]) + b"h" + bytes([i]) + b"\x86q" + bytes([i + 1]) + b"0"
                                 for i in range(40)) + b"h" + bytes([40])
    (folder / "test_batch").write_bytes(b"\x80\x02}(U\x06labelsK\x00U\x04data" + dag + b"u.")
    with pytest.raises(DataError, match=r"test_batch: 'data' is not an \[N, 3072\] uint8 array"):
        load(f"cifar:{folder}")
    # One byte string (memo 1000) rebuilt into 400 arrays: 400 times the file's data.
    def array(raw):
        return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R(K\x01J\x00\x00\x01\x00"
                b"\x85cnumpy\ndtype\nX\x02\x00\x00\x00u1\x89\x88\x87R(K\x03X\x01\x00\x00\x00|NNNJ\xff\xff\xff\xff"
                b"J\xff\xff\xff\xffK\x00tb\x89" + raw + b"tb")
    first = array(b"B" + struct.pack("<I", 2**16) + bytes(2**16) + b"r" + struct.pack("<I", 1000))
    again = array(b"j" + struct.pack("<I", 1000))
    (folder / "test_batch").write_bytes(b"\x80\x03](" + first + again * 399 + b"e.")
    assert len(pickle.loads((folder / "test_batch").read_bytes())) == 400  # numpy itself reads 400 arrays
    with pytest.raises(DataError, match="refused to load: it builds far more data than the file holds"):
        load(f"cifar:{folder}")


def test_cifar_crafted_contents_end_in_clear_errors(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    cases = {"ragged labels": ({b"labels": [[0], [1, 2]], b"data": np.zeros((2, 3072), np.uint8)}, None),
             "no images": ({b"labels": np.zeros(0, np.int64), b"data": np.zeros((0, 3072), np.uint8)}, None),
             "names not a list": ({b"labels": [0], b"data": np.zeros((1, 3072), np.uint8)}, {b"label_names": 5})}
    for case, (batch, meta) in cases.items():
        (folder / "test_batch").write_bytes(_py2_pickle(batch))
        if meta:
            (folder / "batches.meta").write_bytes(_py2_pickle(meta))
        with pytest.raises(DataError, match="test_batch: 'data' is not|batches.meta: the class names are not a list"):
            load(f"cifar:{folder}")
    # A scalar label (np.int64) and an empty byte string, as Python 3 pickles them at protocol 2, are read.
    (folder / "batches.meta").unlink()
    (folder / "test_batch").write_bytes(_py2_pickle({b"labels": [np.int64(3)], b"batch_label": b"",
                                                     b"data": np.zeros((1, 3072), np.uint8)}))
    assert load(f"cifar:{folder}", normal_class=3, train_fraction=1.0).train[0].path == "cifar10/test/00000"
    with pytest.raises(DataError, match="labels='fine' applies to CIFAR-100 only"):
        load(f"cifar:{folder},labels=fine")


def test_cifar_archive_members_larger_than_any_cifar_file_are_refused(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    member = tarfile.TarInfo("cifar-10-batches-py/test_batch")
    member.size = 201 * 2**20
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.addfile(member, io.BytesIO(bytes(member.size)))
    assert archive.stat().st_size < 2**20  # it expands 200-fold
    with pytest.raises(DataError, match="test_batch: 201 MiB, larger than any CIFAR file"):
        load(str(archive))


def test_cifar_paths_a_user_may_give(tmp_path):
    train, test = _batches(10, 5, seed=13), _batches(20, 1, seed=14)
    folder = write_cifar10_python(tmp_path / "both", train, test)
    assert load(f"cifar:{folder / 'test_batch'}").name == "cifar10:airplane"  # one of its files: its folder
    images, fine = _batches(20, 1, seed=15, n_classes=100)
    cifar100 = tmp_path / "both" / "cifar-100-python"
    cifar100.mkdir()
    (cifar100 / "test").write_bytes(_py2_pickle({b"data": _rows(images), b"fine_labels": fine.tolist(),
                                                 b"coarse_labels": (fine % 20).tolist()}))
    (cifar100 / "meta").write_bytes(_py2_pickle({b"coarse_label_names": [f"c{i}".encode() for i in range(20)]}))
    assert load(str(cifar100), train_fraction=1.0).name == "cifar100:c0"  # a bare CIFAR-100 folder is recognised
    with pytest.raises(DataError, match="holds more than one CIFAR copy"):
        load(f"cifar:{tmp_path / 'both'}")


def test_verify_picks_the_cifar_config_from_the_folder_name(tmp_path, capsys):
    from adtf.cli import verify_main
    from adtf.data import verify

    images, fine = _batches(20, 1, seed=16, n_classes=100)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "test").write_bytes(_py2_pickle({b"data": _rows(images), b"fine_labels": fine.tolist(),
                                               b"coarse_labels": (fine % 20).tolist()}))
    assert verify(f"cifar:{folder}").config == "cifar100"  # its name holds cifar10 too: the longer name wins
    test = _batches(20, 1, seed=17)
    ten = write_cifar10_python(tmp_path / "ten", None, test, with_train=False)
    assert verify(f"cifar:{ten}").config == "cifar10"  # the manifest's default
    assert verify_main([f"cifar:{ten}", "--config", "cifar10_test"]) == 1  # a 20-image fake: counts differ
    assert "cifar [cifar10_test]" in capsys.readouterr().out
