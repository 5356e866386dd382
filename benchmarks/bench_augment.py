"""Benchmarks the standard augmentation pipeline against peer libraries.

Pipeline: random horizontal flip, random rotation in [-15, 15] degrees
(bilinear), random resized crop back to the input size (scale 0.08-1, ratio
3/4-4/3), brightness / contrast / saturation jitter 0.4. uint8 in, float32
out; the conversion is timed. Reports images/s after compilation (median of
repeats), every peer in the same run, and ratios to research.augment.

  python benchmarks/bench_augment.py [--repeats 5] [--shapes 256x32,64x224]
      [--grid peers.png] [--out research/docs/augment/bench.json] [--append]

The table is also written as JSON to --out (default
research/docs/augment/bench.json; '' skips it): per run the CPU model, date,
command and jax version, and per shape and peer the img/s, repeats and
research.augment's speed-up over that peer. --append adds the run to the
runs already in the file (e.g. three interleaved runs) instead of replacing
them.

Peers are timed in rounds (one call of each per round, the order rotating),
so load that changes during the run falls on all of them alike.

Peers that are not installed (or fail to import) are skipped and listed.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from research import augment, timing

SPEC = ('flip_lr|affine(rotate=15)|random_resized_crop(scale=(0.08, 1.0), '
        'ratio=(0.75, 1.3333))|color_jitter(0.4, 0.4, 0.4, 0.0)')


def ours(size):
  fn = jax.jit(augment.build(SPEC))
  return lambda key, x: fn(key, x)


def dm_pix_pipeline(size):
  """dm_pix ops, each under vmap, one jit. dm_pix has no random resized
  crop, so the crop box is drawn with our torchvision-style sampler and
  resampled with dm_pix.affine_transform."""
  import dm_pix as pix

  def one(key, x):
    k = jax.random.split(key, 6)
    x = x.astype(jnp.float32) / 255.0
    x = pix.random_flip_left_right(k[0], x)
    angle = jax.random.uniform(k[1], (), minval=-15.0, maxval=15.0)
    x = pix.rotate(x, jnp.deg2rad(angle), order=1, mode='constant')
    top, left, bh, bw = augment.random_resized_crop_params(k[2], (size, size))
    mat = jnp.diag(jnp.array([bh / size, bw / size, 1.0]))
    off = jnp.array([top + 0.5 * bh / size - 0.5, left + 0.5 * bw / size - 0.5,
                     0.0])
    x = pix.affine_transform(x, mat, offset=off, order=1, mode='nearest')
    x = pix.random_brightness(k[3], x, 0.4)
    x = pix.random_contrast(k[4], x, 0.6, 1.4)
    x = pix.random_saturation(k[5], x, 0.6, 1.4)
    return jnp.clip(x, 0.0, 1.0)

  fn = jax.jit(lambda key, x: jax.vmap(one)(jax.random.split(key, x.shape[0]),
                                            x))
  return fn


def augmax_pipeline(size):
  """augmax 0.4.1 (its ColorJitter saturation is a no-op: known bug)."""
  import augmax
  chain = augmax.Chain(
      augmax.ByteToFloat(), augmax.HorizontalFlip(),
      augmax.Rotate((-15, 15)),
      augmax.RandomSizedCrop(size, size, zoom_range=(1.0, 1 / np.sqrt(0.08))),
      augmax.ColorJitter(0.4, 0.4, 0.4, 0.0, p=1.0))
  fn = jax.jit(jax.vmap(chain))
  return lambda key, x: fn(jax.random.split(key, x.shape[0]), x)


def kornia_pipeline(size):
  import kornia.augmentation as K
  import torch
  aug = K.AugmentationSequential(
      K.RandomHorizontalFlip(), K.RandomRotation(15.0),
      K.RandomResizedCrop((size, size), scale=(0.08, 1.0)),
      K.ColorJitter(0.4, 0.4, 0.4, 0.0, p=1.0))

  def run(key, x):
    del key
    with torch.no_grad():
      t = torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255)
      return aug(t)
  return run


def albumentations_pipeline(size):
  import albumentations as alb
  aug = alb.Compose([
      alb.HorizontalFlip(), alb.Rotate(limit=15, border_mode=0),
      alb.RandomResizedCrop((size, size), scale=(0.08, 1.0)),
      alb.ColorJitter(0.4, 0.4, 0.4, 0.0, p=1.0)])

  def run(key, x):
    del key
    return np.stack([aug(image=im)['image'] for im in x]).astype(
        np.float32) / 255
  return run


def torchvision_pipeline(size):
  import torch
  from torchvision.transforms import v2
  aug = v2.Compose([
      v2.RandomHorizontalFlip(), v2.RandomRotation(15),
      v2.RandomResizedCrop(size, antialias=False),
      v2.ColorJitter(0.4, 0.4, 0.4)])

  def run(key, x):
    del key
    with torch.no_grad():
      t = torch.from_numpy(x).permute(0, 3, 1, 2)
      return v2.functional.to_dtype(aug(t), torch.float32, scale=True)
  return run


PEERS = [
    ('research.augment', ours, 'per image'),
    ('dm_pix (vmap+jit)', dm_pix_pipeline, 'per image'),
    ('augmax', augmax_pipeline, 'per image'),
    ('kornia (batched)', kornia_pipeline, 'per image'),
    ('albumentations', albumentations_pipeline, 'per image'),
    ('torchvision v2 (batched)', torchvision_pipeline, 'ONE per batch'),
]


block = timing.block
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'research', 'docs', 'augment', 'bench.json')


def write_json(path, rows, append):
  """Writes (or with `append` adds) this run's rows to `path` as JSON."""
  run = {'cpu': timing.cpu_model(), 'date': str(datetime.date.today()),
         'jax': jax.__version__,
         'load_average_1min': round(os.getloadavg()[0], 2),
         'command': 'python benchmarks/bench_augment.py ' + ' '.join(
             sys.argv[1:]),
         'rows': [{'shape': shape, 'library': name, 'random_params': params,
                   'img_per_s': round(ips, 1), 'repeats': reps,
                   'research_augment_speedup': round(ratio, 3)}
                  for shape, name, params, ips, reps, ratio in rows]}
  runs = []
  if append and os.path.exists(path):
    with open(path) as f:
      runs = json.load(f)['runs']
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump({'runs': runs + [run]}, f, indent=1)
  print(f'wrote {path} ({len(runs) + 1} run(s))')


def time_peer(fn, x, repeats, budget_s):
  """Median seconds per call of one peer alone (used by --policies)."""
  block(fn(jax.random.key(0), x))  # compile
  return time_peers([fn], [x], repeats, budget_s)[0]


def time_peers(fns, inputs, repeats, budget_s):
  """[(median seconds per call, repeats)] per peer, timed in interleaved rounds
  (research.timing.interleaved; a fresh key per call). A peer whose call takes
  longer than budget_s / repeats is timed fewer times (at least once)."""
  keys = [jax.random.key(i) for i in range(repeats + 1)]
  peers = {i: (lambda r, fn=fn, x=x: fn(keys[max(r + 1, 0)], x))
           for i, (fn, x) in enumerate(zip(fns, inputs))}
  out = timing.interleaved(peers, repeats, warmup=1, budget_s=budget_s)
  return [(out[i].median, out[i].count) for i in range(len(fns))]


def to_nhwc(y):
  """A peer's output as a float numpy [N, H, W, C] array."""
  if hasattr(y, 'permute'):  # torch, NCHW
    y = y.permute(0, 2, 3, 1).numpy()
  return np.asarray(y, np.float32)


def write_grid(path, makes, size, columns=6):
  """One row per peer: `columns` augmentations of a real photo
  (skimage.data.astronaut), so the work each peer does can be checked by eye
  (e.g. augmax 0.4.1's saturation jitter doing nothing)."""
  import skimage.data
  from PIL import Image, ImageDraw
  photo = Image.fromarray(skimage.data.astronaut()).resize((size, size),
                                                           Image.BILINEAR)
  x = np.repeat(np.asarray(photo)[None], columns, axis=0)
  rows, names = [], []
  for name, make in makes:
    try:
      inp = jnp.asarray(x) if _is_jax(name) else x
      rows.append(np.clip(to_nhwc(make(size)(jax.random.key(7), inp)), 0, 1))
      names.append(name)
    except Exception as e:  # A missing peer is listed, not fatal.
      print(f'grid: {name} skipped: {type(e).__name__}: {e}'[:200])
  pad = 4
  label_w = 150
  grid = np.ones((len(rows) * (size + pad), label_w + columns * (size + pad),
                  3), np.float32)
  for i, row in enumerate(rows):
    for j, im in enumerate(row):
      y, x0 = i * (size + pad), label_w + j * (size + pad)
      grid[y:y + size, x0:x0 + size] = im[..., :3]
  img = Image.fromarray((grid * 255).round().astype(np.uint8))
  draw = ImageDraw.Draw(img)
  for i, name in enumerate(names):
    draw.text((4, i * (size + pad) + size // 2), name, fill=(0, 0, 0))
  img.save(path)
  print(f'wrote {path}: rows {names}')


def _is_jax(name):
  return name.split(' ')[0] in ('research.augment', 'dm_pix', 'augmax')


def bench_policies(args, rng):
  """img/s of the auto-augment policies under both samplings."""
  print('| shape | policy | sampling | img/s | repeats |')
  print('| --- | --- | --- | ---: | ---: |')
  for shape in args.shapes.split(','):
    n, s = (int(v) for v in shape.split('x'))
    x = jnp.asarray(rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8))
    for policy in ('trivial_augment_wide()', 'rand_augment(2, 9)'):
      for sampling in ('per_image', 'batch_slices'):
        spec = policy.replace(')', f'{", " if "(" + ")" not in policy else ""}'
                              f'sampling="{sampling}")')
        fn = jax.jit(augment.build(spec))
        med, reps = time_peer(fn, x, args.repeats, args.budget_s)
        print(f'| {n}x{s}x3 | {policy} | {sampling} | {n / med:,.0f} | '
              f'{reps} |', flush=True)


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--shapes', default='256x32,64x224')
  p.add_argument('--budget_s', type=float, default=10.0,
                 help='cap on timed seconds per peer and shape')
  p.add_argument('--policies', action='store_true',
                 help='time RandAugment / TrivialAugmentWide per_image vs '
                      'batch_slices sampling instead of the peers')
  p.add_argument('--grid', default='',
                 help='also write a PNG with each peer\'s output on a real '
                      'photo (one row per peer) to this path')
  p.add_argument('--out', default=DEFAULT_OUT,
                 help="write the table as JSON here ('' to skip)")
  p.add_argument('--append', action='store_true',
                 help='add this run to the runs already in --out')
  args = p.parse_args()
  rng = np.random.default_rng(0)
  if args.grid:
    write_grid(args.grid, [(n, m) for n, m, _ in PEERS],
               int(args.shapes.split(',')[-1].split('x')[1]))
  print(f'CPU: {timing.cpu_model()}; jax {jax.__version__}, devices '
        f'{jax.devices()}, load average {os.getloadavg()[0]:.2f}')
  if args.policies:
    return bench_policies(args, rng)
  rows = []
  for shape in args.shapes.split(','):
    n, s = (int(v) for v in shape.split('x'))
    x = rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)
    xj = jnp.asarray(x)
    names, fns, inputs = [], [], []
    for name, make, params in PEERS:
      try:
        fn = make(s)
        inp = xj if _is_jax(name) else x
        block(fn(jax.random.key(0), inp))  # compile; a broken peer fails here
      except Exception as e:  # A missing or broken peer is reported.
        print(f'{n}x{s}: {name} skipped: {type(e).__name__}: {e}'[:200])
        continue
      names.append((name, params))
      fns.append(fn)
      inputs.append(inp)
    timed = time_peers(fns, inputs, args.repeats, args.budget_s)
    base = n / timed[0][0]
    for (name, params), (med, reps) in zip(names, timed):
      ips = n / med
      rows.append((f'{n}x{s}x3', name, params, ips, reps, base / ips))
      print(f'{n}x{s}: {name:28s} {ips:10.0f} img/s  (median of {reps}); '
            f'research.augment is {base / ips:.2f}x', flush=True)
  print('\n| shape | library | random params | img/s | repeats | '
        'research.augment speed-up |')
  print('| --- | --- | --- | ---: | ---: | ---: |')
  for shape, name, params, ips, reps, ratio in rows:
    print(f'| {shape} | {name} | {params} | {ips:,.0f} | {reps} | '
          f'{ratio:.2f}x |')
  if args.out:
    write_json(args.out, rows, args.append)


if __name__ == '__main__':
  main()
