"""ImageNet weights for the image towers from torchvision- (or timm-) named state dicts.

    python -m jaxmm.models.import_weights --arch resnet50 --weights resnet50.safetensors --check

Towers: ResNet / ResNeXt, DenseNet (densenet.torch_key; the old `norm.1`-style keys of
torchvision's densenet121-a639ec97.pth are renamed as torchvision does) and EfficientNet
(efficientnet.torch_key). `load_torchvision` picks the naming from the tower's class.

Reads `.safetensors` (with the `safetensors` package) or `.pth`/`.pt`/`.bin` (with torch, when it is
installed) and maps every key onto our NHWC tower: conv `weight` OIHW -> `kernel` HWIO (grouped
convs too: torch's (O, I/G, kh, kw) is our (kh, kw, I/G, O)), BatchNorm `weight`/`bias`/
`running_mean`/`running_var` -> `scale`/`bias`/`mean`/`var`, `downsample.0/.1` ->
`downsample.conv/.bn`.
`num_batches_tracked` has no counterpart and the 1000-way `fc` is not part of a tower: both are
ignored (the fc arrays come back in `Report.ignored`). Anything else that does not line up (a key
the tower lacks, one it needs but the file lacks, a shape that differs) is reported by name, and is
an error unless `strict=False`. Parity with torch: tests/models/test_import_weights.py.

A converter rather than a model, so it is the one module under models/ that reads files.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmm.models import densenet, efficientnet

_BN = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
_IGNORED_SUFFIXES = ("num_batches_tracked",)
_HEAD_PREFIXES = ("fc.",)
# Wrappers around a state dict in training checkpoints, and prefixes DataParallel / timm add.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
_KEY_PREFIXES = ("module.", "model.")


@dataclasses.dataclass
class Report:
  """How a state dict lined up with a tower. `mismatched`: (key, file shape, tower shape)."""

  loaded: list[str] = dataclasses.field(default_factory=list)
  missing: list[str] = dataclasses.field(default_factory=list)
  unexpected: list[str] = dataclasses.field(default_factory=list)
  mismatched: list[tuple[str, tuple, tuple]] = dataclasses.field(default_factory=list)
  ignored: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

  @property
  def ok(self) -> bool:
    return not (self.missing or self.unexpected or self.mismatched)

  def summary(self, limit: int = 10) -> str:
    head = sorted(k for k in self.ignored if not k.endswith(_IGNORED_SUFFIXES))
    first = (
      f"loaded {len(self.loaded)} arrays; ignored {len(head)} head array(s) "
      f"({', '.join(head)}) and {len(self.ignored) - len(head)} BatchNorm counter(s)"
    )
    return "\n".join([first, *problem_lines(self, "tower", limit)])


def problem_lines(report, target: str, limit: int = 10) -> list[str]:
  """The missing, unexpected and mismatched keys of a load report (`target`: what was loaded
  into, 'tower' or 'encoder'), at most `limit` of each."""
  lines = []
  for name, items in (
    ("missing from the file", report.missing),
    (f"unexpected (not in the {target})", report.unexpected),
  ):
    if items:
      more = f" ... (+{len(items) - limit})" if len(items) > limit else ""
      lines.append(f"{len(items)} key(s) {name}: {', '.join(items[:limit])}{more}")
  for key, got, want in report.mismatched[:limit]:
    lines.append(
      f"shape mismatch: {key} is {got} in the file (torch layout), the {target} needs {want}"
    )
  return lines


_ARCHS = {
  ((2, 2, 2, 2), 1, 1): "resnet18",
  ((3, 4, 6, 3), 1, 1): "resnet34",
  ((3, 4, 6, 3), 4, 1): "resnet50",
  ((3, 4, 6, 3), 4, 32): "resnext50_32x4d",
}


def guess_arch(state_dict: Mapping[str, np.ndarray]) -> str | None:
  """The torchvision architecture a state dict looks like (blocks per stage, block, groups)."""
  state_dict = _clean(state_dict)
  blocks = tuple(
    1 + max((int(k.split(".")[1]) for k in state_dict if k.startswith(f"layer{i}.")), default=-1)
    for i in range(1, 5)
  )
  expansion = 4 if "layer1.0.conv3.weight" in state_dict else 1
  groups = 1
  conv2 = state_dict.get("layer1.0.conv2.weight")
  if expansion == 4 and conv2 is not None and len(np.shape(conv2)) == 4:
    groups = int(np.shape(conv2)[0] // max(np.shape(conv2)[1], 1))
  return _ARCHS.get((blocks, expansion, groups))


def torch_key(path: tuple) -> str:
  """Our variable path -> torchvision's key: ('layer1', 0, 'downsample', 'bn', 'mean') ->
  'layer1.0.downsample.1.running_mean'."""
  parts = [str(p) for p in path]
  leaf, module = parts[-1], parts[:-1]
  if len(module) >= 2 and module[-2] == "downsample":
    module[-1] = {"conv": "0", "bn": "1"}[module[-1]]
  if leaf == "kernel":
    name = "weight"
  elif leaf in _BN:
    name = _BN[leaf]
  else:
    raise KeyError(f"no torchvision name for variable {'/'.join(parts)}")
  return ".".join(module + [name])


def _torch_shape(our_shape: tuple) -> tuple:
  """HWIO kernel shape as torch stores it (OIHW); vectors unchanged."""
  if len(our_shape) == 4:
    kh, kw, i, o = our_shape
    return (o, i, kh, kw)
  return tuple(our_shape)


def _to_ours(array: np.ndarray) -> np.ndarray:
  array = np.asarray(array, np.float32)
  return np.transpose(array, (2, 3, 1, 0)) if array.ndim == 4 else array


def _clean(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  keys = list(state_dict)
  for prefix in _KEY_PREFIXES:
    if keys and all(k.startswith(prefix) for k in keys):
      return {k[len(prefix) :]: v for k, v in state_dict.items()}
  return dict(state_dict)


def load_torchvision_resnet(
  tower: nnx.Module, state_dict: Mapping[str, np.ndarray], *, strict: bool = True
) -> Report:
  """Copies a torchvision-named ResNet/ResNeXt state dict into `tower` in place -> Report.

  strict: raise ValueError listing every missing / unexpected / mismatched key (nothing is
  changed then); otherwise load what lines up and return the Report.
  """
  return _load(
    tower, _clean(state_dict), torch_key, _HEAD_PREFIXES, strict=strict, hint=_resnet_hint
  )


# torchvision's own fix-up for its DenseNet files: `denselayer1.norm.1.weight` -> `norm1.weight`.
_DENSENET_LEGACY = re.compile(
  r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
  r"((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _densenet_keys(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  out = {}
  for key, array in _clean(state_dict).items():
    m = _DENSENET_LEGACY.match(key)
    out[m.group(1) + m.group(2) if m else key] = array
  return out


def load_torchvision(
  tower: nnx.Module, state_dict: Mapping[str, np.ndarray], *, strict: bool = True
) -> Report:
  """A torchvision state dict into any of our torchvision-layout towers (ResNet / ResNeXt,
  DenseNet, EfficientNet), named by the tower's class; as `load_torchvision_resnet`."""
  if isinstance(tower, densenet.DenseNet):
    return _load(
      tower, _densenet_keys(state_dict), densenet.torch_key, ("classifier.",), strict=strict
    )
  if isinstance(tower, efficientnet.EfficientNet):
    return _load(tower, _clean(state_dict), efficientnet.torch_key, ("classifier.",), strict=strict)
  return load_torchvision_resnet(tower, state_dict, strict=strict)


def _resnet_hint(state_dict: Mapping[str, np.ndarray], report: Report) -> str:
  hint = ""
  guess = guess_arch(state_dict)
  if guess and len(report.mismatched) + len(report.unexpected) + len(report.missing) > 2:
    hint += f"\nthe file looks like torchvision's {guess}: is that the tower's architecture?"
  if any(k == "conv1.weight" for k, _, _ in report.mismatched):
    hint += (
      "\nconv1 differs: ImageNet weights need the tower's stem='imagenet' (7x7 conv) and "
      "3 input channels."
    )
  return hint


def _load(tower, state_dict, key_fn, head_prefixes, *, strict, hint=None) -> Report:
  """Copies `state_dict[key_fn(path)]` into every Param / BatchStat of `tower` -> Report."""
  report = Report()
  used = set()
  updates = []
  for path, var in nnx.to_flat_state(nnx.state(tower, nnx.Any(nnx.Param, nnx.BatchStat))):
    key = key_fn(path)
    current = var.get_value()  # `var[...]` fails on an abstract (nnx.eval_shape) tower
    want = tuple(current.shape)
    if key not in state_dict:
      report.missing.append(key)
      continue
    used.add(key)
    array = np.asarray(state_dict[key])
    if tuple(array.shape) != _torch_shape(want):
      report.mismatched.append((key, tuple(array.shape), _torch_shape(want)))
      continue
    updates.append((path, var.replace(jnp.asarray(_to_ours(array), current.dtype))))
    report.loaded.append(key)
  for key, array in state_dict.items():
    if key in used:
      continue
    if key.endswith(_IGNORED_SUFFIXES) or key.startswith(head_prefixes):
      report.ignored[key] = np.asarray(array)
    else:
      report.unexpected.append(key)
  if strict and not report.ok:
    extra = hint(state_dict, report) if hint else ""
    raise ValueError(f"the state dict does not fit the tower:\n{report.summary()}{extra}")
  if updates:
    nnx.update(tower, nnx.from_flat_state(updates))
  return report


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """`.safetensors` (safetensors package) or a torch pickle `.pth`/`.pt`/`.bin` (torch) -> numpy.

  A torch checkpoint that wraps the weights ({'state_dict': ...}, {'model': ...}) is unwrapped.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"weights file {path!r} does not exist")
  if path.endswith(".safetensors"):
    try:
      from safetensors.numpy import load_file
    except ImportError:
      raise ImportError(
        "reading .safetensors needs the safetensors package: "
        "pip install safetensors (or pip install 'jaxmm[weights]')"
      ) from None
    try:
      return dict(load_file(path))
    except (TypeError, ValueError):  # bf16 has no numpy dtype: go through torch if it is there
      return _read_torch(path, safetensors=True)
  return _read_torch(path)


def _read_torch(path: str, *, safetensors: bool = False) -> dict[str, np.ndarray]:
  try:
    import torch
  except ImportError:
    raise ImportError(
      f"reading {path} needs torch (pip install 'jaxmm[torch]'), or convert it to .safetensors"
    ) from None
  if safetensors:
    from safetensors.torch import load_file

    obj = load_file(path)
  else:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  for key in _WRAPPER_KEYS:
    if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
      obj = obj[key]
  if not isinstance(obj, Mapping):
    raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict")
  return {k: v.detach().float().numpy() for k, v in obj.items() if hasattr(v, "detach")}


def load_weights_file(tower: nnx.Module, path: str, *, strict: bool = True) -> Report:
  """`read_state_dict(path)` into `tower`; errors name the file."""
  try:
    return load_torchvision(tower, read_state_dict(path), strict=strict)
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from None


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument(
    "--arch",
    required=True,
    help="resnet18 | resnet34 | resnet50 | resnext50_32x4d | densenet121 | "
    "efficientnet_b1 (and the other densenet / efficientnet variants)",
  )
  parser.add_argument("--weights", required=True, help=".safetensors, or .pth/.pt with torch")
  parser.add_argument(
    "--check",
    action="store_true",
    help="also run the loaded tower on a random 64 px batch and print features",
  )
  parser.add_argument("--activation", default="relu")
  args = parser.parse_args(argv)
  from jaxmm.models.resnet import resnet_by_name

  if args.arch.lower().startswith("densenet"):
    make = lambda: densenet.densenet_by_name(args.arch)(rngs=nnx.Rngs(0))
  elif args.arch.lower().startswith("efficientnet"):
    make = lambda: efficientnet.efficientnet_by_name(args.arch)(rngs=nnx.Rngs(0))
  else:
    make = lambda: resnet_by_name(args.arch)(
      stem="imagenet", activation=args.activation, rngs=nnx.Rngs(0)
    )
  # Abstract build: a strict load overwrites every array, so no random init is needed.
  tower = nnx.eval_shape(make)
  try:
    report = load_weights_file(tower, args.weights, strict=True)
  except (ValueError, ImportError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(report.summary())
  if args.check:
    tower.eval()
    x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype(np.float32)
    feats = np.asarray(nnx.jit(lambda m, x: m.encode(x))(tower, x))
    finite = bool(np.isfinite(feats).all())
    print(f"features {feats.shape}: mean {feats.mean():.4f} std {feats.std():.4f} finite {finite}")
    if not finite:
      return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
