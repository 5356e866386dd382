r"""Frozen-feature extraction: ours (research.transfer.features) vs the PyTorch
reference Lite0, and the feature cache's load vs extraction, on the CPU.

Both sides compute the 1280-d pooled features of the same mnist5k images
(train then test split, uint8 28x28 gray) at 224 px with the shipped ImageNet
weights, preprocessing included: bilinear resize to 224, gray repeated to 3
channels, ImageNet normalisation, eval-mode BatchNorm, global average pool.
Ours is `features.Extractor` over all local devices (one per CPU process
here); PyTorch runs `extract_features` + average pooling under
`torch.inference_mode()`. One warm-up pass each (ours: compile), then
`--repeats` passes over all images, alternating between the two so that load
from other processes hits both alike; medians are reported. The cache line
times `FeatureCache.load` of the same features (median of 5) against our
median extraction time.

  python benchmarks/bench_features.py --n 5000 --repeats 3
  python benchmarks/bench_features.py --n 512             # a quick subset

Needs the `torch` extra (torch, efficientnet-lite-pytorch==0.1.0).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import jax
import numpy as np

from research import data, models, transfer
from research.tasks import classify
from research.transfer import features, pretrained, torch_checkpoint

SIZE = 224


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def ours(batch_size: int):
  """(extract(images) -> [N, 1280], variables) with the shipped weights."""
  model = models.get_model("efficientnet_lite0", num_classes=1000)
  cfg = {"size": SIZE, "channels": 3, "normalize": "imagenet"}
  inputs = lambda images: classify.normalize(classify.preprocess(images, cfg), "imagenet")
  variables = model.init(jax.random.PRNGKey(0), np.zeros((1, SIZE, SIZE, 3), np.float32))
  variables = transfer.load_pretrained(variables, "efficientnet_lite0")
  extractor = features.Extractor(features.pooled_feature_fn(model, inputs), batch_size)
  return (lambda images: extractor(variables, images)), variables


def reference(batch_size: int):
  """extract(images) -> [N, 1280] with efficientnet-lite-pytorch, same weights."""
  import torch  # pylint: disable=g-import-not-at-top
  from efficientnet_lite_pytorch import EfficientNet  # pylint: disable=g-import-not-at-top
  model = EfficientNet.from_name("efficientnet-lite0")
  state = torch_checkpoint.load_state_dict(pretrained.default_weights_path())
  missing, unexpected = model.load_state_dict(
      {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, strict=False)
  if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
    raise RuntimeError(f"reference Lite0: missing {missing}, unexpected {unexpected}")
  model.eval()
  mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
  std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

  def extract(images):
    out = []
    with torch.inference_mode():
      for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start:start + batch_size]).permute(0, 3, 1, 2).float() / 255
        x = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear",
                                            align_corners=False)
        x = (x.repeat(1, 3, 1, 1) - mean) / std
        pooled = model._avg_pooling(model.extract_features(x))  # pylint: disable=protected-access
        out.append(pooled.flatten(1).numpy())
    return np.concatenate(out)
  return extract


def timed(fn, *args):
  t = time.perf_counter()
  out = fn(*args)
  return time.perf_counter() - t, out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=5000, help="images (first n of train+test)")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  import torch  # pylint: disable=g-import-not-at-top
  print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; jax {jax.__version__} "
        f"({jax.local_device_count()} device), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); load average {os.getloadavg()[0]:.2f}")
  images = np.concatenate([data.load("mnist5k", s)["image"] for s in ("train", "test")])
  images = images[:args.n]
  ours_fn, variables = ours(args.batch_size)
  ref_fn = reference(args.batch_size)
  compile_s, ours_feats = timed(ours_fn, images)
  _, ref_feats = timed(ref_fn, images)
  diff = float(np.max(np.abs(ours_feats - ref_feats)))
  times = {"ours": [], "torch": []}
  for _ in range(args.repeats):  # alternating: background load hits both alike
    times["ours"].append(timed(ours_fn, images)[0])
    times["torch"].append(timed(ref_fn, images)[0])
  med = {k: statistics.median(v) for k, v in times.items()}
  n = len(images)
  print(f"{n} images at {SIZE} px, batch {args.batch_size}, {args.repeats} alternating "
        f"repeats after one warm-up each (ours' first pass incl. compile: {compile_s:.1f} s); "
        f"max |feature difference| ours vs torch {diff:.2e}; load average now "
        f"{os.getloadavg()[0]:.2f}")
  print("| extractor | median s | images/s | all runs s |")
  print("|---|---|---|---|")
  for k in ("ours", "torch"):
    print(f"| {k} | {med[k]:.2f} | {n / med[k]:.1f} | "
          f"{', '.join(f'{t:.2f}' for t in times[k])} |")
  print(f"ours / torch throughput: {med['torch'] / med['ours']:.2f}")

  with tempfile.TemporaryDirectory() as root:
    cache = features.FeatureCache(root)
    key = features.FeatureKey(weights=features.weights_hash(variables),
                              model="efficientnet_lite0", input_size=SIZE,
                              normalize="imagenet/c3", dataset="mnist5k",
                              split=f"train+test[:{n}]")
    labels = np.zeros(n, np.int32)
    cache.save(key, ours_feats, labels)
    loads = [timed(cache.load, key)[0] for _ in range(5)]
  load = statistics.median(loads)
  print(f"cache load of [{n}, {ours_feats.shape[1]}] float32: median {load * 1e3:.1f} ms "
        f"(5 loads, checksum verified) vs extraction {med['ours']:.2f} s: "
        f"{med['ours'] / load:.0f}x faster")


if __name__ == "__main__":
  main()
