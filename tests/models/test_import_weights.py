"""ImageNet weight import: parity with a torch ResNet that has torchvision's parameter names.

torchvision is too heavy for CI, so the torch ResNet/ResNeXt is written here (torchvision's
BasicBlock / Bottleneck v1.5 / ResNet, same attribute names); its random weights and random
BatchNorm statistics go through a state dict into our NHWC tower.
"""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from jaxmm.models import import_weights as iw
from jaxmm.models import resnet

torch = pytest.importorskip("torch")
tnn = torch.nn


class TorchBasic(tnn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
    super().__init__()
    self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = tnn.BatchNorm2d(planes)
    self.relu = tnn.ReLU(inplace=True)
    self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = tnn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    identity = x if self.downsample is None else self.downsample(x)
    return self.relu(out + identity)


class TorchBottleneck(tnn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
    super().__init__()
    width = int(planes * (base_width / 64.0)) * groups
    self.conv1 = tnn.Conv2d(inplanes, width, 1, bias=False)
    self.bn1 = tnn.BatchNorm2d(width)
    self.conv2 = tnn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
    self.bn2 = tnn.BatchNorm2d(width)
    self.conv3 = tnn.Conv2d(width, planes * 4, 1, bias=False)
    self.bn3 = tnn.BatchNorm2d(planes * 4)
    self.relu = tnn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    identity = x if self.downsample is None else self.downsample(x)
    return self.relu(out + identity)


class TorchResNet(tnn.Module):
  """torchvision.models.ResNet minus its fc call: forward returns the pooled features."""

  def __init__(self, block, layers, groups=1, width_per_group=64, width=64):
    super().__init__()
    self.inplanes, self.groups, self.base_width = width, groups, width_per_group
    self.conv1 = tnn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = tnn.BatchNorm2d(width)
    self.relu = tnn.ReLU(inplace=True)
    self.maxpool = tnn.MaxPool2d(3, 2, 1)
    for i, n in enumerate(layers):
      setattr(self, f"layer{i + 1}", self._make_layer(block, width * 2**i, n, 1 if i == 0 else 2))
    self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
    self.fc = tnn.Linear(self.inplanes, 1000)

  def _make_layer(self, block, planes, blocks, stride):
    downsample = None
    if stride != 1 or self.inplanes != planes * block.expansion:
      downsample = tnn.Sequential(
        tnn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
        tnn.BatchNorm2d(planes * block.expansion),
      )
    layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width)]
    self.inplanes = planes * block.expansion
    layers += [
      block(self.inplanes, planes, groups=self.groups, base_width=self.base_width)
      for _ in range(1, blocks)
    ]
    return tnn.Sequential(*layers)

  def forward(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    for i in range(4):
      x = getattr(self, f"layer{i + 1}")(x)
    return torch.flatten(self.avgpool(x), 1)


TORCH_ARCHS = {
  "resnet18": lambda: TorchResNet(TorchBasic, [2, 2, 2, 2]),
  "resnet50": lambda: TorchResNet(TorchBottleneck, [3, 4, 6, 3]),
  "resnext50_32x4d": lambda: TorchResNet(
    TorchBottleneck, [3, 4, 6, 3], groups=32, width_per_group=4
  ),
}


def _randomised(model, seed=0):
  """Random BN affine + running statistics (fresh ones are 1/0 and would hide a mix-up)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, tnn.BatchNorm2d):
        n = m.num_features
        m.weight.copy_(0.5 + torch.rand(n, generator=g))
        m.bias.copy_(0.1 * torch.randn(n, generator=g))
        m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
        m.running_var.copy_(0.5 + torch.rand(n, generator=g))
        m.num_batches_tracked.fill_(7)
  return model.eval()


def _state_dict(model):
  return {k: v.numpy() for k, v in model.state_dict().items()}


def _abstract(name, **kw):
  return nnx.eval_shape(
    lambda: resnet.resnet_by_name(name)(stem="imagenet", rngs=nnx.Rngs(0), **kw)
  )


_encode = nnx.jit(lambda m, x: m.encode(x))  # one function: towers of one structure share a compile


def _features(tower, images_NHWC):
  tower.eval()
  return np.asarray(_encode(tower, images_NHWC))


# 32 px reaches every stride, downsample and a 1x1 last stage while keeping the compiles small.
# conv_impl 'auto' on CPU runs XLA's conv on the stem and layer1 (>16 px maps) and im2col on
# layer2..4 and on every grouped conv, so resnet18 / ResNeXt cover both paths;
# test_files_... runs a tiny net with im2col everywhere (the 7x7 stem included).
@pytest.mark.parametrize(
  "name, impls", [("resnet18", ("auto",)), ("resnet50", ("xla",)), ("resnext50_32x4d", ("auto",))]
)
def test_features_equal_torch(name, impls):
  torch.manual_seed(0)
  model = _randomised(TORCH_ARCHS[name]())
  images = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
  state_dict = _state_dict(model)
  for impl in impls:
    tower = _abstract(name, conv_impl=impl)
    report = iw.load_torchvision_resnet(tower, state_dict)
    assert report.ok and sorted(report.ignored) == sorted(
      ["fc.weight", "fc.bias"] + [k for k in state_dict if k.endswith("num_batches_tracked")]
    )
    _assert_parity(model, tower, images)


def _assert_parity(torch_model, tower, images_NCHW):
  with torch.no_grad():
    want = torch_model(torch.from_numpy(images_NCHW)).numpy()
  got = _features(tower, images_NCHW.transpose(0, 2, 3, 1))
  assert got.shape == want.shape
  assert np.abs(want).max() > 0.1  # not a trivially zero output
  assert np.abs(got - want).max() < 1e-4, np.abs(got - want).max()


def _tiny_torch():
  return _randomised(TorchResNet(TorchBasic, [1, 1, 1, 1], width=8))


def _tiny_tower(**kw):
  return nnx.eval_shape(
    lambda: resnet.ResNet(
      stage_sizes=(1, 1, 1, 1), block=resnet.BasicBlock, num_filters=8, rngs=nnx.Rngs(0), **kw
    )
  )


def test_files_safetensors_and_pth_wrapped_and_prefixed(tmp_path):
  model = _tiny_torch()
  state_dict = _state_dict(model)
  safetensors_torch = pytest.importorskip("safetensors.torch")
  files = [tmp_path / "w.safetensors", tmp_path / "w.pth"]
  safetensors_torch.save_file(model.state_dict(), str(files[0]))
  # A training checkpoint: wrapped and saved from DataParallel ("module." prefixes).
  torch.save(
    {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
    str(files[1]),
  )
  images = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
  outs = []
  for path in files:
    read = iw.read_state_dict(str(path))
    assert set(iw._clean(read)) == set(state_dict)
    tower = _tiny_tower(conv_impl="im2col")
    iw.load_weights_file(tower, str(path))
    np.testing.assert_array_equal(
      tower.layer2[0].downsample.bn.var[...], state_dict["layer2.0.downsample.1.running_var"]
    )
    outs.append(_features(tower, images))
  np.testing.assert_array_equal(outs[0], outs[1])
  _assert_parity(model, tower, images.transpose(0, 3, 1, 2))


def test_mismatches_are_named():
  state_dict = _state_dict(_tiny_torch())
  # The 'small' stem has a 3x3 conv1: the error names the key, both shapes and the fix.
  with pytest.raises(
    ValueError,
    match=r"conv1\.weight is \(8, 3, 7, 7\).*\(8, 3, 3, 3\)"
    r"(.|\n)*stem='imagenet'",
  ):
    iw.load_torchvision_resnet(_tiny_tower(stem="small"), state_dict)
  broken = dict(state_dict)
  del broken["layer3.0.bn2.running_mean"]
  broken["layer5.0.conv1.weight"] = np.zeros((1, 1, 1, 1), np.float32)
  tower = _tiny_tower()
  with pytest.raises(
    ValueError,
    match=r"missing from the file: layer3\.0\.bn2\.running_mean"
    r"(.|\n)*unexpected.*layer5\.0\.conv1\.weight",
  ):
    iw.load_torchvision_resnet(tower, broken)
  report = iw.load_torchvision_resnet(tower, broken, strict=False)
  assert report.missing == ["layer3.0.bn2.running_mean"]
  assert report.unexpected == ["layer5.0.conv1.weight"] and not report.mismatched
  np.testing.assert_array_equal(
    tower.layer3[0].bn2.var[...], state_dict["layer3.0.bn2.running_var"]
  )


def test_torch_key_names():
  assert (
    iw.torch_key(("layer1", 0, "downsample", "conv", "kernel")) == "layer1.0.downsample.0.weight"
  )
  assert iw.torch_key(("layer4", 2, "bn3", "var")) == "layer4.2.bn3.running_var"
  assert iw.torch_key(("bn1", "scale")) == "bn1.weight"


def test_command_line(tmp_path, capsys):
  safetensors_torch = pytest.importorskip("safetensors.torch")
  model = _randomised(TORCH_ARCHS["resnet18"]())
  path = str(tmp_path / "r18.safetensors")
  safetensors_torch.save_file(model.state_dict(), path)
  assert iw.main(["--arch", "resnet18", "--weights", path]) == 0
  # 20 convs + 20 BNs x 4 arrays; fc weight and bias; 20 num_batches_tracked.
  assert (
    "loaded 100 arrays; ignored 2 head array(s) (fc.bias, fc.weight) and 20 BatchNorm counter(s)"
  ) in capsys.readouterr().out
  assert iw.main(["--arch", "resnet50", "--weights", path]) == 1
  err = capsys.readouterr().err
  assert "missing from the file" in err and "looks like torchvision's resnet18" in err


@pytest.mark.parametrize("name", sorted(TORCH_ARCHS))
def test_guess_arch(name):
  keys = {k: np.zeros(v.shape, np.float32) for k, v in TORCH_ARCHS[name]().state_dict().items()}
  assert iw.guess_arch(keys) == name
