"""The PyTorch reference cGAN: research/models/gan.py's conditional-BatchNorm
generator and spectral-norm projection discriminator (the `cpu` variant of
configs/mnist5k_cgan.py) and research/tasks/gan.py's train step (hinge loss,
class term, Adam with per-group learning-rate multipliers, EMA generator,
DiffAugment), written independently in PyTorch, NCHW, plus converters of our
Flax variables into it.

Used by tests/test_bench_gan_torch.py (checks our networks and train step
against it) and by benchmarks/bench_gan_torch.py (times one train step of
each). Needs the `torch` extra, imported lazily; `research/` never imports
torch. Parameters come from ours (`load_flax_generator` /
`load_flax_discriminator`); there is no independent initialiser.
"""
from __future__ import annotations

import math
import re

import numpy as np


def _torch():
  import torch  # pylint: disable=g-import-not-at-top
  return torch


def _l2_normalize(x, eps=1e-12):
  """x / sqrt(sum(x^2) + eps), as Flax's SpectralNorm normalises."""
  return x * (x.square().sum() + eps).rsqrt()


def make_torch_generator(latent_dim=128, width=32, num_classes=10, image_size=28,
                         channels=1):
  """Generator(conditioning='cbn'): z [N, latent] + labels [N] -> images [N, C, H, W].

  Dense(base^2 * top) -> CBN -> ReLU -> (ConvT 4x4 s2 -> CBN -> ReLU)* ->
  ConvT 4x4 s2 -> tanh, with top = width * 2^(steps - 1), image_size =
  base * 2^steps (base 7 or 4). CBN: BatchNorm without affine (eps 1e-5,
  running-statistics momentum 0.1 = Flax's 0.9), then per-class scale/shift.
  """
  torch = _torch()
  from torch import nn  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  base = 7 if image_size % 7 == 0 else 4
  steps = int(round(math.log2(image_size / base)))
  top = width * 2 ** (steps - 1)

  class CBN(nn.Module):
    def __init__(self, features):
      super().__init__()
      self.gamma = nn.Embedding(num_classes, features)
      self.beta = nn.Embedding(num_classes, features)
      self.register_buffer("running_mean", torch.zeros(features))
      self.register_buffer("running_var", torch.ones(features))

    def forward(self, x, labels, update_stats=True):
      # momentum 0 leaves the running statistics as they are (ours discards the
      # generator's statistics in the discriminator step).
      x = F.batch_norm(x, self.running_mean, self.running_var, training=self.training,
                       momentum=0.1 if update_stats else 0.0, eps=1e-5)
      return x * self.gamma(labels)[:, :, None, None] + self.beta(labels)[:, :, None, None]

  class TorchGenerator(nn.Module):
    def __init__(self):
      super().__init__()
      self.base, self.top, self.latent_dim = base, top, latent_dim
      self.project = nn.Linear(latent_dim, base * base * top)
      self.bn_project = CBN(top)
      self.ups = nn.ModuleList()
      self.bns = nn.ModuleList()
      for i in range(steps - 1):
        # Flax ConvTranspose 'SAME' doubles the size: torch padding 1.
        self.ups.append(nn.ConvTranspose2d(top // 2 ** i, top // 2 ** (i + 1), 4, 2, 1))
        self.bns.append(CBN(top // 2 ** (i + 1)))
      self.to_image = nn.ConvTranspose2d(top // 2 ** (steps - 1), channels, 4, 2, 1)

    def forward(self, z, labels, update_stats=True):
      h = self.project(z).view(z.shape[0], self.top, self.base, self.base)
      h = F.relu(self.bn_project(h, labels, update_stats))
      for up, bn in zip(self.ups, self.bns):
        h = F.relu(bn(up(h), labels, update_stats))
      return torch.tanh(self.to_image(h))

  return TorchGenerator()


def make_torch_discriminator(width=16, num_classes=10, num_downsamples=2, channels=1):
  """Discriminator(spectral_norm=True, conditional=True): images [N, C, H, W] +
  labels [N] -> (logits [N], pooled features [N, F]).

  stem Conv3x3 -> LeakyReLU(0.1) -> (Conv4x4 s2 -> LReLU -> Conv3x3 -> LReLU)*
  -> global sum pool -> Dense(1) + <embed(y), h> (projection). Every
  Conv/Dense kernel is spectrally normalised with one power iteration from the
  stored u (Flax's SpectralNorm: the kernel as a [fan_in, out] matrix); `u`
  advances only when `update_stats`.
  """
  torch = _torch()
  from torch import nn  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  class SNLayer(nn.Module):
    def __init__(self, layer):
      super().__init__()
      self.layer = layer
      out = layer.weight.shape[0]
      self.register_buffer("u", torch.randn(1, out))

    def matrix(self):
      w = self.layer.weight
      # [fan_in, out] with rows in Flax's (kh, kw, in) order for convs.
      return w.permute(2, 3, 1, 0).reshape(-1, w.shape[0]) if w.dim() == 4 else w.t()

    def forward(self, x, update_stats):
      w_mat = self.matrix()
      with torch.no_grad():
        v = _l2_normalize(self.u @ w_mat.t())
        u = _l2_normalize(v @ w_mat)
      sigma = (v @ w_mat @ u.t())[0, 0]
      if update_stats:
        self.u.copy_(u)
      w = self.layer.weight / torch.where(sigma != 0, sigma, torch.ones_like(sigma))
      if isinstance(self.layer, nn.Conv2d):
        return F.conv2d(x, w, self.layer.bias, self.layer.stride, self.layer.padding)
      return F.linear(x, w, self.layer.bias)

  class TorchDiscriminator(nn.Module):
    def __init__(self):
      super().__init__()
      self.stem = SNLayer(nn.Conv2d(channels, width, 3, 1, 1))
      self.down, self.conv = nn.ModuleList(), nn.ModuleList()
      c = width
      for i in range(num_downsamples):
        w = width * 2 ** (i + 1)
        # Flax 'SAME' for a 4x4 stride-2 conv on an even size pads 1 on each side.
        self.down.append(SNLayer(nn.Conv2d(c, w, 4, 2, 1)))
        self.conv.append(SNLayer(nn.Conv2d(w, w, 3, 1, 1)))
        c = w
      self.head = SNLayer(nn.Linear(c, 1))
      self.projection = nn.Embedding(num_classes, c)

    def forward(self, x, labels, update_stats=False):
      h = F.leaky_relu(self.stem(x, update_stats), 0.1)
      for down, conv in zip(self.down, self.conv):
        h = F.leaky_relu(down(h, update_stats), 0.1)
        h = F.leaky_relu(conv(h, update_stats), 0.1)
      features = h.sum((2, 3))
      logits = self.head(features, update_stats)[:, 0]
      return logits + (self.projection(labels) * features).sum(1), features

  return TorchDiscriminator()


# ------------------------------------------------------------ Flax -> torch
def _conv(k):
  return np.transpose(np.asarray(k), (3, 2, 0, 1))


def _deconv(k):
  # lax.conv_transpose (transpose_kernel=False) correlates with the kernel as
  # stored, torch with the flipped one: HWIO -> IOHW, spatially flipped.
  return np.ascontiguousarray(np.transpose(np.asarray(k)[::-1, ::-1], (2, 3, 0, 1)))


def generator_state_dict(model, params, batch_stats) -> dict:
  """Our Generator's Flax params / batch_stats -> a state dict for `model`."""
  top, base = model.top, model.base
  k = np.asarray(params["project"]["kernel"])  # [latent, (h, w, c)]
  b = np.asarray(params["project"]["bias"])
  perm = lambda a: a.reshape(a.shape[:-1] + (base, base, top)).swapaxes(-1, -3).swapaxes(
      -1, -2).reshape(a.shape)  # (h, w, c) -> (c, h, w) on the last axis
  out = {"project.weight": np.ascontiguousarray(perm(k).T), "project.bias": perm(b)}

  def cbn(prefix, name):
    stats = batch_stats[name]["BatchNorm_0"]
    out.update({f"{prefix}.gamma.weight": params[name]["gamma"]["embedding"],
                f"{prefix}.beta.weight": params[name]["beta"]["embedding"],
                f"{prefix}.running_mean": stats["mean"], f"{prefix}.running_var": stats["var"]})

  cbn("bn_project", "bn_project")
  for i in range(len(model.ups)):
    out[f"ups.{i}.weight"] = _deconv(params[f"up_{i}"]["kernel"])
    out[f"ups.{i}.bias"] = params[f"up_{i}"]["bias"]
    cbn(f"bns.{i}", f"bn_up_{i}")
  out["to_image.weight"] = _deconv(params["to_image"]["kernel"])
  out["to_image.bias"] = params["to_image"]["bias"]
  return out


def discriminator_state_dict(model, params, batch_stats) -> dict:
  """Our Discriminator's Flax params / spectral-norm vectors -> a state dict."""
  out = {}

  def layer(prefix, name, conv=True):
    k = params[name]["kernel"]
    out[f"{prefix}.layer.weight"] = _conv(k) if conv else np.ascontiguousarray(np.asarray(k).T)
    out[f"{prefix}.layer.bias"] = params[name]["bias"]
    out[f"{prefix}.u"] = batch_stats[f"{name}_sn"][f"{name}/kernel/u"]

  layer("stem", "stem")
  for i in range(len(model.down)):
    layer(f"down.{i}", f"down_{i}")
    layer(f"conv.{i}", f"conv_{i}")
  layer("head", "head", conv=False)
  out["projection.weight"] = params["projection"]["embedding"]
  return out


def load_state(model, state: dict) -> None:
  """Loads a dict of numpy arrays into `model` (every entry, strictly)."""
  torch = _torch()
  model.load_state_dict({k: torch.from_numpy(np.array(v, np.float32)) for k, v in state.items()})


# ------------------------------------------------------------ DiffAugment
def diff_augment(x, gen, policy="color,translation,cutout"):
  """DiffAugment (Zhao et al. 2020) on NCHW images, as research/augment/diff.py:
  colour (brightness U[-0.5, 0.5), saturation x U[0, 2), contrast x U[0.5, 1.5)),
  translation by up to 1/8 of the size (zero fill), cutout of a half-size
  square; one draw per image from the torch Generator `gen`."""
  torch = _torch()
  n, _, h, w = x.shape
  names = [p.strip() for p in policy.split(",") if p.strip()]
  u = lambda: torch.rand((n, 1, 1, 1), generator=gen)
  if "color" in names:
    x = x + (u() - 0.5)
    mean = x.mean(1, keepdim=True)
    x = (x - mean) * (u() * 2.0) + mean
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * (u() + 0.5) + mean
  if "translation" in names:
    sy, sx = int(h * 0.125 + 0.5), int(w * 0.125 + 0.5)
    ty = torch.randint(-sy, sy + 1, (n, 1, 1), generator=gen)
    tx = torch.randint(-sx, sx + 1, (n, 1, 1), generator=gen)
    gy = torch.arange(h)[None, :, None] - ty  # source row of each output row
    gx = torch.arange(w)[None, None, :] - tx
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))  # zero border, index 0 / -1
    gy = (gy + 1).clamp(0, h + 1)
    gx = (gx + 1).clamp(0, w + 1)
    flat = gy * (w + 2) + gx  # [n, h, w]
    x = padded.flatten(2).gather(2, flat.flatten(1)[:, None, :].expand(-1, x.shape[1], -1))
    x = x.view(n, -1, h, w)
  if "cutout" in names:
    ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1, 1), generator=gen)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1, 1), generator=gen)
    ys = torch.arange(h)[None, None, :, None]
    xs = torch.arange(w)[None, None, None, :]
    y0, x0 = oy - ch // 2, ox - cw // 2
    inside = (ys >= y0) & (ys < y0 + ch) & (xs >= x0) & (xs < x0 + cw)
    x = x * (1.0 - inside.to(x.dtype))
  return x


# ------------------------------------------------------------ the train step
class TorchGANStep:
  """research/tasks/gan.py's train step (n_critic = 1) in PyTorch.

  D update: hinge loss on (augmented real, augmented fake from G in train
  mode, statistics not kept), real and fake in one batch, spectral-norm
  vectors advanced, plus class_weight * cross-entropy of the projection read
  as a classifier (features @ embed^T) on the real half. G update: -mean
  D(augment(G(z, y)), y) + class_weight * cross-entropy on the fakes, D with
  fixed vectors; then the EMA of G's parameters with decay
  min(ema_decay, (1 + t) / (10 + t)). Adam per parameter group, the group's
  learning rate = lr * its multiplier (optax.scale of an Adam update is the
  same step).
  """

  def __init__(self, generator, discriminator, g_lr=2e-4, d_lr=4e-4, betas=(0.0, 0.9),
               g_mults=((r".*(gamma|beta).*", 10.0),), d_mults=((r"projection.*", 5.0),),
               class_weight=1.0, ema_decay=0.999, policy="color,translation,cutout", seed=0):
    torch = _torch()
    self.torch, self.g, self.d = torch, generator, discriminator
    self.g_opt = torch.optim.Adam(self._groups(generator, g_lr, g_mults), betas=betas, eps=1e-8)
    self.d_opt = torch.optim.Adam(self._groups(discriminator, d_lr, d_mults), betas=betas,
                                  eps=1e-8)
    self.class_weight, self.ema_decay, self.policy = class_weight, ema_decay, policy
    self.ema = {k: v.detach().clone() for k, v in generator.named_parameters()}
    self.gen = torch.Generator().manual_seed(seed)
    self.step = 0

  @staticmethod
  def _groups(model, lr, mults):
    """Adam parameter groups: the first (regex, multiplier) whose regex fully
    matches a torch parameter name sets its group's learning rate."""
    groups = {}
    for name, p in model.named_parameters():
      m = next((m for pattern, m in mults if re.fullmatch(pattern, name)), 1.0)
      groups.setdefault(m, []).append(p)
    return [{"params": ps, "lr": lr * m} for m, ps in groups.items()]

  def _augment(self, x):
    return diff_augment(x, self.gen, self.policy) if self.policy else x

  def _class_loss(self, features, labels):
    logits = features @ self.d.projection.weight.t()
    return self.torch.nn.functional.cross_entropy(logits, labels)

  def noise(self, n):
    return (self.torch.randn((n, self.g.latent_dim), generator=self.gen),
            self.torch.randint(0, self.d.projection.num_embeddings, (n,), generator=self.gen))

  def __call__(self, real, y_real, d_noise=None, g_noise=None):
    """One step on real images float [N, C, H, W] in [-1, 1] and labels int64 [N];
    (z, labels) for the D and G updates drawn here unless given. Returns a
    dict of float losses (d_loss, d_class, g_loss, g_class)."""
    torch = self.torch
    relu = torch.nn.functional.relu
    n = real.shape[0]
    self.g.train()
    z, y_fake = d_noise if d_noise is not None else self.noise(n)
    with torch.no_grad():
      fake = self.g(z, y_fake, update_stats=False)
    x = torch.cat([self._augment(real), self._augment(fake)])
    logits, features = self.d(x, torch.cat([y_real, y_fake]), update_stats=True)
    d_loss = relu(1.0 - logits[:n]).mean() + relu(1.0 + logits[n:]).mean()
    d_class = self._class_loss(features[:n], y_real)
    self.d_opt.zero_grad(set_to_none=True)
    (d_loss + self.class_weight * d_class).backward()
    self.d_opt.step()

    z, y_fake = g_noise if g_noise is not None else self.noise(n)
    fake = self._augment(self.g(z, y_fake, update_stats=True))
    for p in self.d.parameters():
      p.requires_grad_(False)
    logits, features = self.d(fake, y_fake, update_stats=False)
    g_loss = -logits.mean()
    g_class = self._class_loss(features, y_fake)
    self.g_opt.zero_grad(set_to_none=True)
    (g_loss + self.class_weight * g_class).backward()
    self.g_opt.step()
    for p in self.d.parameters():
      p.requires_grad_(True)
    t = float(self.step)
    decay = min(self.ema_decay, (1.0 + t) / (10.0 + t))
    with torch.no_grad():
      for name, p in self.g.named_parameters():
        self.ema[name].mul_(decay).add_(p, alpha=1.0 - decay)
    self.step += 1
    return {"d_loss": d_loss.detach(), "d_class": d_class.detach(),
            "g_loss": g_loss.detach(), "g_class": g_class.detach()}
