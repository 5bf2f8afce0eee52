"""Data sets as uint8 tensors in memory, normalisation and batch augmentation.

Every loader returns a `Dataset` with uint8 images (N, C, H, W), int64 labels, class
names and the per-channel mean/std (of the training pixels, scaled to 0..1). The model
sees x = (p/255 - mean[c]) / std[c]. Nothing is ever downloaded.

Supported:
- "fashion-mnist": the IDX files (gzipped or not) of the official release, as Debian's
  dataset-fashion-mnist installs them (default /usr/share/datasets/fashion-mnist).
- "cifar10": the official python pickles (a directory holding data_batch_1..5 and
  test_batch, e.g. cifar-10-batches-py, or the cifar-10-python.tar.gz archive), or an
  image-folder tree <root>/{train,test}/<class>/*.{jpg,png} given as a directory or as a
  .tar/.tar.gz of it (e.g. a cifar10-jpeg.tar.gz of the JPEG tree). Decoded pixels are
  cached as .npz under --cache-dir (default ~/.cache/butterflyvit) so the JPEGs are
  decoded once.
- "digits": scikit-learn's 8x8 digits (0..16 scaled to 0..255), split 1500/297 with a fixed
  permutation. For tests and tiny runs.
- "folder": your own images, DIR/<class>/<image> (any format Pillow reads, any sizes), or
  DIR/{train,test}/<class>/<image> for a split of your own. Each image is centre-cropped to a
  square and resized (Lanczos) to image_size (default 32); the images are RGB unless every one
  is greyscale. Without train/test folders, about 20% of the files go to the test split by a
  hash of "<class>/<file name>": the same split on every run and machine, and a file never
  changes side when others are added. Decoded pixels are cached like CIFAR-10's, keyed on
  every file's name, size and modification time.
"""

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import UserError

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]
DATASETS = ("fashion-mnist", "cifar10", "digits", "folder")
FOLDER_IMAGE_SIZE = 32       # the folder data set's default input size (pixels, square)
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm")


class DataError(UserError):
    """Data that is missing or cannot be read; the message names the file, or --data."""


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self):
        return len(self.labels)


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    classes: list
    mean: list = field(default_factory=list)
    std: list = field(default_factory=list)

    @property
    def image_size(self):
        return self.train.images.shape[-1]

    @property
    def channels(self):
        return self.train.images.shape[1]


def channel_stats(images: torch.Tensor) -> tuple[list, list]:
    """Per-channel mean and std of uint8 images scaled to 0..1."""
    x = images.double().div_(255.0).transpose(0, 1).reshape(images.shape[1], -1)
    return [round(v, 6) for v in x.mean(1).tolist()], [round(v, 6) for v in x.std(1).tolist()]


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 (p/255 - mean[c]) / std[c]."""
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - m) / s


# ------------------------------------------------------------------------- Fashion-MNIST

def _open_maybe_gz(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic 0x00 0x00 type ndim, big-endian dims."""
    path = Path(path)
    try:
        with _open_maybe_gz(path) as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:  # unreadable, or a broken .gz
        raise DataError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
             0x0E: ">f8"}.get(data[2])
    if dtype is None:
        raise DataError(f"{path}: unknown IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    body = len(data) - 4 - 4 * ndim
    if body < 0 or body % np.dtype(dtype).itemsize:
        raise DataError(f"{path}: IDX file truncated")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DataError(f"{path}: size {arr.size} does not match dims {dims}")
    return arr.reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz",
                 stem.replace("-idx", ".idx")):
        if (root / name).exists():
            return root / name
    raise DataError(f"{root}: no {stem}[.gz] in this folder (a Fashion-MNIST IDX folder "
                    "has train-images-idx3-ubyte.gz and the three other files; for a folder "
                    "of your own images use --dataset folder)")


def load_fashion_mnist(path=None) -> Dataset:
    root = Path(path or FASHION_MNIST_DIR)
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: not a folder (Fashion-MNIST's --data is the folder of its IDX files)")
    if not root.is_dir():
        hint = "give --data DIR" if path else "Debian: apt install dataset-fashion-mnist, or give --data DIR"
        raise DataError(f"{root}: no such Fashion-MNIST folder ({hint})")
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
        y = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
        splits[split] = Split(torch.from_numpy(x.copy()).unsqueeze(1),
                              torch.from_numpy(y.astype(np.int64)))
    mean, std = channel_stats(splits["train"].images)
    return Dataset("fashion-mnist", splits["train"], splits["test"], FASHION_MNIST_CLASSES,
                   mean, std)


# ------------------------------------------------------------------------------ CIFAR-10

def _numpy_pickle_globals():
    """The only globals a CIFAR-10 batch pickle may name: numpy's array, dtype and scalar
    reconstructors (as numpy.core before numpy 2 and numpy._core after; _frombuffer is
    what pickle protocol 5 uses). Everything else -- os.system, exec, ... -- is refused."""
    reconstruct = np.zeros(1, np.uint8).__reduce__()[0]
    frombuffer = np.zeros(1, np.uint8).__reduce_ex__(5)[0]
    scalar = np.int64(0).__reduce__()[0]
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _Refused(pickle.UnpicklingError):
    pass


class _CifarUnpickler(pickle.Unpickler):
    """Reads the official batches (dicts of bytes, lists and uint8 arrays) and nothing that
    could run code: a pickle names the callables it calls, and only numpy's are allowed."""
    allowed = _numpy_pickle_globals()

    def find_class(self, module, name):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise _Refused(f"refused to unpickle {module}.{name}") from None


def _unpickle_cifar(data: bytes, where: str):
    try:
        return _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _Refused as exc:
        raise DataError(f"{where}: not a plain CIFAR-10 batch ({exc}); CIFAR-10 "
                            "pickles may hold only numpy arrays and plain values") from None
    except Exception as exc:  # truncated or not a pickle at all
        raise DataError(f"{where}: not a CIFAR-10 pickle ({type(exc).__name__}: {exc})") from None


def _cifar_from_pickles(read, where):
    """read(name) -> bytes of a member of the cifar-10-batches-py set (FileNotFoundError if
    absent); where(name) -> how to name that member in an error."""
    def batch(name):
        try:
            data = read(name)
        except FileNotFoundError:
            raise DataError(f"{where(name)}: missing (CIFAR-10 needs data_batch_1..5 and "
                                "test_batch)") from None
        d = _unpickle_cifar(data, where(name))
        try:
            x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(d[b"labels"], dtype=np.int64).reshape(-1)
            if len(x) != len(y):
                raise ValueError(f"{len(x)} images but {len(y)} labels")
        except (TypeError, KeyError, IndexError, ValueError) as exc:
            raise DataError(f"{where(name)}: not a CIFAR-10 batch (a dict of b'data', "
                                f"N x 3072 uint8, and b'labels'; {type(exc).__name__}: {exc})") from None
        return x, y

    xs, ys = zip(*(batch(f"data_batch_{i}") for i in range(1, 6)))
    xt, yt = batch("test_batch")
    try:
        meta = _unpickle_cifar(read("batches.meta"), where("batches.meta"))
        classes = [c.decode() for c in meta[b"label_names"]]
    except (KeyError, TypeError, AttributeError, FileNotFoundError):
        classes = CIFAR10_CLASSES  # no (usable) class names: the official ones
    return np.concatenate(xs), np.concatenate(ys), xt, yt, classes


def _decode(data: bytes, name: str) -> np.ndarray:
    from .images import read_image  # 16-bit scaled, decompression bombs refused
    return read_image(io.BytesIO(data), "RGB", name).transpose(2, 0, 1)


def _from_image_members(members):
    """members: iterable of (relative path parts, read()) -> arrays of an image-folder tree
    <...>/{train,test}/<class>/<file>."""
    items = {"train": [], "test": []}
    for parts, read in members:
        if len(parts) < 3 or not parts[-1].lower().endswith(IMAGE_EXT):
            continue
        split, cls = parts[-3], parts[-2]
        if split in items:
            items[split].append((cls, parts[-1], read))
    if not items["train"] or not items["test"]:
        raise ValueError("no <root>/{train,test}/<class>/<image> files found")
    classes = sorted({c for c, _, _ in items["train"]})
    out = []
    for split in ("train", "test"):
        rows = sorted(items[split], key=lambda r: (r[0], r[1]))
        x = np.stack([_decode(read(), f"{split}/{c}/{f}") for c, f, read in rows])
        y = np.array([classes.index(c) for c, _, _ in rows], dtype=np.int64)
        out += [x, y]
    return (*out, classes)


def _cifar_source(path: Path):
    """Decode whatever layout `path` holds; returns (xtr, ytr, xte, yte, classes)."""
    if path.is_dir():
        for d in (path, path / "cifar-10-batches-py"):
            if (d / "data_batch_1").exists():
                return _cifar_from_pickles(lambda n, d=d: (d / n).read_bytes(),
                                           lambda n, d=d: str(d / n))
        files = [p for p in path.rglob("*") if p.is_file()]
        return _from_image_members(
            (p.relative_to(path).parts, p.read_bytes) for p in files)
    if tarfile.is_tarfile(path):
        with tarfile.open(path) as tf:
            names = {Path(m.name).name: m for m in tf.getmembers() if m.isfile()}
            if "data_batch_1" in names:
                def read(n):
                    if n not in names:
                        raise FileNotFoundError(n)
                    return tf.extractfile(names[n]).read()
                return _cifar_from_pickles(
                    read, lambda n: f"{path}:{names[n].name if n in names else n}")
            members = [(Path(m.name).parts, (lambda m=m: tf.extractfile(m).read()))
                       for m in tf.getmembers() if m.isfile()]
            return _from_image_members(members)
    raise ValueError(f"{path}: not a CIFAR-10 pickle directory, image tree or tar archive")


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "butterflyvit"


def _source_key(path: Path, *extra) -> str:
    """What the decoded pixels depend on: for a folder, every file's relative name, size and
    modification time (adding an image to a class folder changes the key; the folder's own
    time would not); for a file (an archive), its own."""
    h = hashlib.sha1(f"{path}|{'|'.join(map(str, extra))}".encode())
    if path.is_dir():
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            st = p.stat()
            h.update(f"\n{p.relative_to(path)}|{st.st_size}|{st.st_mtime_ns}".encode())
    else:
        st = path.stat()
        h.update(f"|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _cached_decode(kind: str, key: str, cache_dir, decode) -> tuple:
    """(xtr, ytr, xte, yte, classes) from the .npz cache, or decode() and cache it."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cfile = cache / f"{kind}-{key}.npz"
    if cfile.exists():
        z = np.load(cfile, allow_pickle=False)  # the cache is data too
        return z["xtr"], z["ytr"], z["xte"], z["yte"], [str(c) for c in z["classes"]]
    xtr, ytr, xte, yte, classes = decode()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cfile.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, xtr=xtr, ytr=ytr, xte=xte, yte=yte, classes=np.array(classes))
        os.replace(tmp, cfile)
    except OSError:
        pass  # a read-only cache only costs the decoding time
    return xtr, ytr, xte, yte, classes


def _dataset(name, xtr, ytr, xte, yte, classes) -> Dataset:
    train = Split(torch.from_numpy(np.ascontiguousarray(xtr)), torch.from_numpy(ytr))
    test = Split(torch.from_numpy(np.ascontiguousarray(xte)), torch.from_numpy(yte))
    mean, std = channel_stats(train.images)
    return Dataset(name, train, test, list(classes), mean, std)


def load_cifar10(path, cache_dir=None) -> Dataset:
    if not path:
        raise DataError("CIFAR-10 needs --data PATH (pickle directory, image tree or .tar.gz)")
    path = Path(path).resolve()
    if not path.exists():
        raise DataError(f"{path}: no such CIFAR-10 file or folder (--data)")
    arrays = _cached_decode("cifar10", _source_key(path), cache_dir, lambda: _cifar_source(path))
    return _dataset("cifar10", *arrays)


# ------------------------------------------------------------------ your own images

def _test_side(cls: str, name: str) -> bool:
    """The hash split: about 1 file in 5 is a test image, decided by its own name only."""
    return zlib.crc32(f"{cls}/{name}".encode()) % 5 == 0


def _folder_files(root: Path) -> dict:
    """{"train"/"test": [(class, path)]} of root/<class>/<image> or root/{train,test}/<class>/<image>."""
    def images_of(d: Path):
        return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXT
                      and not p.name.startswith("."))

    def class_dirs(d: Path):
        return sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith("."))

    if (root / "train").is_dir() and (root / "test").is_dir():
        out = {split: [(c.name, p) for c in class_dirs(root / split) for p in images_of(c)]
               for split in ("train", "test")}
        where = f"{root}/{{train,test}}"
    else:
        out = {"train": [], "test": []}
        for c in class_dirs(root):
            for p in images_of(c):
                out["test" if _test_side(c.name, p.name) else "train"].append((c.name, p))
        where = str(root)
    classes = sorted({c for c, _ in out["train"]})
    if len(classes) < 2:
        raise DataError(f"{where}: found {len(classes)} class folder(s) with images; an image "
                        f"folder data set is DIR/<class>/<image> with at least 2 classes "
                        f"(images: {', '.join(IMAGE_EXT)})")
    if not out["test"]:
        raise DataError(f"{where}: no test images (add images, or make train/ and test/ folders)")
    unknown = sorted({c for c, _ in out["test"]} - set(classes))
    if unknown:
        raise DataError(f"{root}/test/{unknown[0]}: a class with no training images")
    return out, classes


def _read_folder(root: Path, image_size: int) -> tuple:
    from .images import fit, is_greyscale, read_image

    files, classes = _folder_files(root)
    every = files["train"] + files["test"]
    mode = "L" if all(is_greyscale(p) for _, p in every) else "RGB"
    arrays = []
    for split in ("train", "test"):
        x = [fit(read_image(p, mode), (image_size, image_size)) for _, p in files[split]]
        x = np.stack(x)
        x = x[:, None] if mode == "L" else x.transpose(0, 3, 1, 2)
        arrays += [x, np.array([classes.index(c) for c, _ in files[split]], dtype=np.int64)]
    return (*arrays, classes)


def load_folder(path, image_size=None, cache_dir=None) -> Dataset:
    """Your own images (module doc): DIR/<class>/<image>, or with train/ and test/ folders."""
    if not path:
        raise DataError("--dataset folder needs --data DIR (DIR/<class>/<image>)")
    root = Path(path).resolve()
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (--data for --dataset folder is DIR/<class>/<image>)")
    size = image_size or FOLDER_IMAGE_SIZE
    arrays = _cached_decode("folder", _source_key(root, size), cache_dir,
                            lambda: _read_folder(root, size))
    return _dataset("folder", *arrays)


# -------------------------------------------------------------------------------- digits

def load_digits() -> Dataset:
    from sklearn.datasets import load_digits as sk_digits
    d = sk_digits()
    x = np.clip(d.images * 16, 0, 255).astype(np.uint8)[:, None]
    y = d.target.astype(np.int64)
    perm = np.random.RandomState(0).permutation(len(y))
    tr, te = perm[:1500], perm[1500:]
    train = Split(torch.from_numpy(x[tr]), torch.from_numpy(y[tr]))
    test = Split(torch.from_numpy(x[te]), torch.from_numpy(y[te]))
    mean, std = channel_stats(train.images)
    return Dataset("digits", train, test, [str(i) for i in range(10)], mean, std)


def load_dataset(name: str, path=None, cache_dir=None, image_size=None) -> Dataset:
    """The data set `name` from `path` (--data). Whatever is missing or unreadable raises
    DataError, one line naming the file (or --data). `image_size` is the folder data set's
    input size (the others have their own)."""
    loaders = {"fashion-mnist": lambda: load_fashion_mnist(path),
               "cifar10": lambda: load_cifar10(path, cache_dir), "digits": load_digits,
               "folder": lambda: load_folder(path, image_size, cache_dir)}
    if name not in loaders:
        raise DataError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    try:
        return loaders[name]()
    except DataError:
        raise
    except OSError as exc:  # an unreadable file, ...
        where = exc.filename or path or name
        raise DataError(f"{where}: cannot read {name} data ({exc.strerror or exc})") from None
    except (ValueError, EOFError, tarfile.TarError) as exc:  # the readers' other refusals
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(msg if path and str(path) in msg else f"{path}: {msg}") from None


# ------------------------------------------------------------------------- augmentation

def augment(images: torch.Tensor, pad: int, flip: bool, generator=None) -> torch.Tensor:
    """Random crop after zero-padding by `pad` pixels, and random horizontal flips, for a
    uint8 or float batch (B, C, H, W), vectorised over the batch."""
    b, c, h, w = images.shape
    if pad > 0:
        x = torch.nn.functional.pad(images, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
        ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
        rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
        images = x[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None],
                   rows, cols]
    if flip:
        f = torch.rand(b, generator=generator) < 0.5
        images = torch.where(f[:, None, None, None], images.flip(-1), images)
    return images
