"""The PyTorch reference VAE: research/models/vae.py's VAE (Bernoulli) written
independently in PyTorch, with the same initialisation, bound, learning-rate
schedule and KL warm-up, and a converter of our Flax parameters into it.

Used by tests/test_bench_vae_torch.py (checks our VAE against it) and by
benchmarks/bench_vae_torch.py (trains both side by side). Needs the `torch`
extra, imported lazily; `research/` never imports torch.
"""
from __future__ import annotations

import math

import numpy as np


def make_torch_vae(image_shape=(28, 28, 1), latent_dim=16, width=32, hidden=256):
  """A PyTorch VAE layer-for-layer like research.models.vae.VAE (Bernoulli).

  Images NCHW. `encode(x) -> (mean, log_var)`, `decode(z) -> logits`
  [N, C, H, W]. Initialised like Flax's defaults (truncated-normal LeCun
  kernels, zero biases) from torch's global RNG.
  """
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  height, wid, channels = image_shape
  h4, w4 = height // 4, wid // 4

  class TorchVAE(nn.Module):
    """Encoder and decoder of research/models/vae.py, NCHW."""

    def __init__(self):
      super().__init__()
      self.latent_dim = latent_dim
      # Flax 'SAME' for a 4x4 stride-2 conv on an even size pads 1 on each side.
      self.enc_conv1 = nn.Conv2d(channels, width, 4, stride=2, padding=1)
      self.enc_conv2 = nn.Conv2d(width, 2 * width, 4, stride=2, padding=1)
      self.enc_dense = nn.Linear(2 * width * h4 * w4, hidden)
      self.enc_mean = nn.Linear(hidden, latent_dim)
      self.enc_log_var = nn.Linear(hidden, latent_dim)
      self.dec_dense1 = nn.Linear(latent_dim, hidden)
      self.dec_dense2 = nn.Linear(hidden, h4 * w4 * 2 * width)
      # Flax ConvTranspose 'SAME' doubles the size: torch padding 1 (k - 1 - p = 2
      # zeros each side of the dilated input, as lax.conv_transpose pads).
      self.dec_deconv1 = nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1)
      self.dec_deconv2 = nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1)
      self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
      for module in self.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
          w = module.weight
          if isinstance(module, nn.Linear):
            fan_in = w.shape[1]
          elif isinstance(module, nn.ConvTranspose2d):  # [in, out, kh, kw]
            fan_in = w.shape[0] * w.shape[2] * w.shape[3]
          else:  # [out, in, kh, kw]
            fan_in = w.shape[1] * w.shape[2] * w.shape[3]
          # jax.nn.initializers.lecun_normal(): truncated at +-2 sd, rescaled so
          # that the truncated distribution has variance 1 / fan_in.
          std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
          nn.init.trunc_normal_(w, 0.0, std, -2.0 * std, 2.0 * std)
          nn.init.zeros_(module.bias)

    def encode(self, x):
      h = F.relu(self.enc_conv1(x))
      h = F.relu(self.enc_conv2(h))
      h = F.relu(self.enc_dense(h.flatten(1)))
      return self.enc_mean(h), self.enc_log_var(h)

    def decode(self, z):
      h = F.relu(self.dec_dense1(z))
      h = F.relu(self.dec_dense2(h)).view(z.shape[0], 2 * width, h4, w4)
      h = F.relu(self.dec_deconv1(h))
      return self.dec_deconv2(h)

  return TorchVAE()


def torch_bound_terms(model, x, eps):
  """(log p(x|z), KL(q(z|x) || N(0, I))) per example, for z = mean + sd * eps."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  mean, log_var = model.encode(x)
  z = mean + torch.exp(0.5 * log_var) * eps
  logits = model.decode(z)
  ll = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
  kl = 0.5 * (log_var.exp() + mean.square() - 1.0 - log_var).sum(1)
  return ll, kl


def lr_factor(step: int, num_steps: int, warmup_steps: int) -> float:
  """LR / peak LR at update `step` (0-based): linear warm-up from 0, then cosine to 0."""
  if step < warmup_steps:
    return step / warmup_steps
  decay = max(num_steps - warmup_steps, 1)
  return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, decay) / decay))


def kl_weight(step: int, beta: float, kl_warmup_steps: int) -> float:
  """beta_t for update `step` (0-based), as VAETask.train_step computes it."""
  return beta * min(1.0, (step + 1) / kl_warmup_steps) if kl_warmup_steps else beta


def flax_to_torch_state_dict(params) -> dict:
  """Our VAE's Flax params -> a state dict for `make_torch_vae` (numpy arrays).

  Conv kernels HWIO -> OIHW; transposed-conv kernels HWIO -> IOHW, spatially
  flipped (lax.conv_transpose with transpose_kernel=False correlates the
  dilated input with the kernel as stored, torch with the flipped kernel);
  Dense [in, out] -> [out, in]; the Dense next to a flatten/reshape also has
  its (h, w, c) axis permuted to torch's (c, h, w).
  """
  enc, dec = params["encoder"], params["decoder"]
  conv = lambda k: np.transpose(np.asarray(k), (3, 2, 0, 1))
  deconv = lambda k: np.ascontiguousarray(
      np.transpose(np.asarray(k)[::-1, ::-1], (2, 3, 0, 1)))
  dense = lambda k: np.ascontiguousarray(np.asarray(k).T)
  c2 = np.asarray(enc["Conv_1"]["kernel"]).shape[-1]
  flat = np.asarray(enc["Dense_0"]["kernel"])  # [h4 * w4 * c2, hidden]
  s = int(round(math.sqrt(flat.shape[0] // c2)))
  enc_dense = flat.reshape(s, s, c2, -1).transpose(2, 0, 1, 3).reshape(flat.shape)
  k2 = np.asarray(dec["Dense_1"]["kernel"])  # [hidden, h4 * w4 * c2]
  b2 = np.asarray(dec["Dense_1"]["bias"])
  dec_k2 = k2.reshape(-1, s, s, c2).transpose(0, 3, 1, 2).reshape(k2.shape)
  dec_b2 = b2.reshape(s, s, c2).transpose(2, 0, 1).reshape(b2.shape)
  b = lambda p: np.asarray(p["bias"])
  return {
      "enc_conv1.weight": conv(enc["Conv_0"]["kernel"]), "enc_conv1.bias": b(enc["Conv_0"]),
      "enc_conv2.weight": conv(enc["Conv_1"]["kernel"]), "enc_conv2.bias": b(enc["Conv_1"]),
      "enc_dense.weight": dense(enc_dense), "enc_dense.bias": b(enc["Dense_0"]),
      "enc_mean.weight": dense(enc["mean"]["kernel"]), "enc_mean.bias": b(enc["mean"]),
      "enc_log_var.weight": dense(enc["log_var"]["kernel"]),
      "enc_log_var.bias": b(enc["log_var"]),
      "dec_dense1.weight": dense(dec["Dense_0"]["kernel"]), "dec_dense1.bias": b(dec["Dense_0"]),
      "dec_dense2.weight": dense(dec_k2), "dec_dense2.bias": dec_b2,
      "dec_deconv1.weight": deconv(dec["ConvTranspose_0"]["kernel"]),
      "dec_deconv1.bias": b(dec["ConvTranspose_0"]),
      "dec_deconv2.weight": deconv(dec["ConvTranspose_1"]["kernel"]),
      "dec_deconv2.bias": b(dec["ConvTranspose_1"]),
  }


def load_flax_params(model, params) -> None:
  """Copies our Flax VAE params into a `make_torch_vae` model, in place."""
  import torch  # pylint: disable=g-import-not-at-top
  model.load_state_dict({k: torch.from_numpy(np.array(v, np.float32))
                         for k, v in flax_to_torch_state_dict(params).items()})
