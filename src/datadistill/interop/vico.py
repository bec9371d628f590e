"""``vico``: the result file of the DC / DSA / DM code (VICO-UoE/DatasetCondensation ``main.py``,
``main_DM.py``).

Layout: ``res_<method>_<dataset>_<model>_<ipc>ipc.pt`` holding ``{"data": [[images, labels], ...],
"accs_all_exps": {model: [accuracy, ...]}}``, one ``[images, labels]`` pair per experiment
(``--num_exp``; the file is rewritten after each one). Images float (N, C, H, W), always normalized
with the dataset's mean/std (that code's ``utils.get_dataset`` has no ZCA; its statistics equal
datadistill's); labels int64 (N,), class-ordered. ``--exp K`` picks an experiment (default 0).
Export writes one experiment, ZCA undone (the VICO code has none), with an empty ``accs_all_exps``.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, FormatError
from ..synset import SyntheticSet
from . import files
from .registry import Format, ImportOptions, register_format
from .space import NORMALIZED, into_set, out_of_set, resolve_space

# datadistill dataset -> the name the VICO code gives it (the <dataset> of the file name)
VICO_NAMES = {"mnist": "MNIST", "mnist-5k": "MNIST", "fashion_mnist": "FashionMNIST", "svhn": "SVHN",
              "cifar10": "CIFAR10", "cifar100": "CIFAR100"}


@register_format
class VICO(Format):
    name = "vico"
    description = "DC/DSA/DM's res_<method>_<dataset>_<model>_<ipc>ipc.pt: {'data': [[images, labels], ...]}"
    source = "VICO-UoE/DatasetCondensation main.py and main_DM.py (saving), utils.py get_dataset (normalization)"
    experiments = True

    def locate(self, path: Path) -> Path:
        if path.is_dir():
            found = sorted(path.glob("res_*.pt"))
            if len(found) != 1:
                raise FormatError(f"{path}: {len(found)} res_*.pt files; give the file itself")
            return found[0]
        if not path.is_file():
            raise FormatError(f"{path}: no such file")
        return path

    def read(self, path: Path, opts: ImportOptions) -> SyntheticSet:
        path = self.locate(path)
        space = resolve_space(self.name, path, opts, NORMALIZED, "the VICO code (it always normalizes)")
        obj = files.load_pt(path)
        data = obj.get("data") if isinstance(obj, dict) else None
        if not isinstance(data, list) or not data:
            raise FormatError(f"{path}: not a VICO result file (expected a dict whose 'data' is a non-empty list "
                              f"of [images, labels])")
        k = 0 if opts.exp is None else opts.exp
        if not 0 <= k < len(data):
            raise ConfigError(f"{path}: --exp {k} out of range: the file holds {len(data)} experiment(s), 0..{len(data) - 1}")
        pair = data[k]
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise FormatError(f"{path}: experiment {k} is not an [images, labels] pair")
        spec = opts.spec
        images = files.images_tensor(pair[0], spec, path)
        labels = files.hard_labels(pair[1], len(images), spec, path)
        images, _ = into_set(images, space, spec, None)
        accs = obj.get("accs_all_exps") if isinstance(obj.get("accs_all_exps"), dict) else {}
        meta = {"imported": {"format": self.name, "source": str(path), "images": space, "exp": k,
                             "experiments": len(data), "layout": self.source,
                             "accs_all_exps": {str(m): [float(a) for a in v] for m, v in accs.items()
                                               if isinstance(v, list)}}}
        return SyntheticSet(images, labels, spec, None, None, meta)

    def write(self, syn: SyntheticSet, dest: Path) -> str:
        if syn.soft:
            raise FormatError("vico stores hard labels; this set has soft labels (export it as datm, pad or ddranking)")
        if dest.suffix != ".pt":
            cfg = syn.meta.get("config") or {}
            method = str(syn.meta.get("method") or cfg.get("method") or "datadistill")
            model = str(cfg.get("model") or "ConvNet")
            dest = dest / f"res_{method}_{VICO_NAMES.get(syn.spec.name, syn.spec.name)}_{model}_{syn.ipc}ipc.pt"
        files.check_free(dest.parent, [dest.name])
        images, _ = out_of_set(syn, keep_zca=False)
        files.save_pt({"data": [[images, syn.labels.detach().cpu().long().contiguous()]], "accs_all_exps": {}}, dest)
        undone = " (ZCA undone)" if syn.zca is not None else ""
        return f"{len(syn)} normalized images{undone} as experiment 0 of {dest}"
