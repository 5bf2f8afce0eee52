"""Checkpoints: one torch.save'd dict of plain data (format in docs/training.md).

Keys: "format" (1), "config" (ModelConfig.to_dict()), "model" (state_dict), "normalize"
({"mean": [...], "std": [...]} per channel, for p/255), "classes", "dataset", "train"
(the TrainConfig as a dict), "optimizer", "scheduler", "step", "epoch", "total_steps",
"metrics", "torch_version".

Every value is a tensor or a plain Python value (dict, list, tuple, str, int, float, bool,
None), so files are read with torch.load(weights_only=True): a checkpoint is data, and a
crafted .pt cannot run code. `load_checkpoint` is the one reader every command uses.
"""

import os
import pickle
import re
import warnings
from pathlib import Path

import torch

from .config import ModelConfig
from .errors import UserError

FORMAT = 1
PLAIN = (str, int, float, bool, type(None))  # exact types: a str subclass is not plain


class CheckpointError(UserError):
    """A file that is not a (loadable) butterflyvit checkpoint; str() is one line naming it."""


def build_model(cfg: ModelConfig):
    from .vit import ViT
    return ViT(cfg)


def _check_plain(obj, where="checkpoint"):
    """Refuse to write what weights_only=True could not read back."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, f"{where} key")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif type(obj) not in PLAIN and not isinstance(obj, torch.Tensor):
        raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}; "
                        "checkpoints hold only tensors and plain Python values")


def save_checkpoint(path, ckpt: dict) -> None:
    """Atomic save: write a temporary file beside `path`, then rename."""
    path = Path(path)
    ckpt = {"format": FORMAT, "torch_version": str(torch.__version__), **ckpt}
    _check_plain(ckpt)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def _refused_global(exc):
    """The global named in torch's many-paragraph weights_only refusal, if it names one."""
    m = re.search(r"GLOBAL (\S+)", str(exc))
    return m.group(1) if m else None


def _first_line(exc) -> str:
    m = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(exc))
    lines = str(exc).strip().splitlines()
    return m.group(1).strip() if m else lines[0] if lines else type(exc).__name__


def load_checkpoint(path, map_location="cpu") -> dict:
    """The checkpoint dict in `path`, read with weights_only=True.

    FileNotFoundError if there is no such file; CheckpointError (one line naming the file)
    for anything else that is not a plain butterflyvit checkpoint.
    """
    try:
        with warnings.catch_warnings():  # e.g. torch's note on an unusual pickle protocol
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as exc:
        name = _refused_global(exc)
        if name:
            raise CheckpointError(f"{path}: not a plain checkpoint (refused to unpickle {name}); "
                                  "checkpoints are loaded with weights_only=True") from None
        raise CheckpointError(f"{path}: cannot read the checkpoint (not a torch.save file of "
                              f"plain data: {_first_line(exc)})") from None
    except (KeyError, EOFError):  # what torch's legacy reader makes of other bytes
        raise CheckpointError(f"{path}: cannot read the checkpoint (not a torch.save file, "
                              "or truncated)") from None
    except Exception as exc:  # a directory, a damaged archive, ...
        raise CheckpointError(f"{path}: cannot read the checkpoint ({_first_line(exc)})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict) \
            or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"{path}: not a butterflyvit checkpoint (no config and model)")
    fmt = ckpt.get("format", FORMAT)
    if not isinstance(fmt, int) or fmt > FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {fmt!r} is newer than {FORMAT}")
    return ckpt


def load_model(path, map_location="cpu"):
    """(model in eval mode, checkpoint dict) from a checkpoint file."""
    ckpt = load_checkpoint(path, map_location)
    try:
        model = build_model(ModelConfig.from_dict(ckpt["config"]))
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError) as exc:  # config and weights do not fit
        raise CheckpointError(f"{path}: not a usable checkpoint ({_first_line(exc)})") from None
    model.eval()
    return model, ckpt
