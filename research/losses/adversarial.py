"""Adversarial losses for GANs and the gradient penalties (WGAN-GP, R1).

Conventions: the discriminator (critic) returns one real logit per example,
`float32 [B]` (any real value; larger means "more real"). Every loss returns a
scalar averaged over the batch, to be *minimised* by the network it names:
`discriminator_loss` by D, `generator_loss` by G.

Kinds (the paper's names):
  'non_saturating'  Goodfellow et al. 2014, D: BCE(real=1, fake=0),
                    G: -log sigmoid(D(G(z))) (the non-saturating trick).
  'hinge'           Lim & Ye 2017 / Miyato et al. 2018 (SNGAN),
                    D: relu(1 - D(x)) + relu(1 + D(G(z))), G: -D(G(z)).
  'least_squares'   Mao et al. 2017 (LSGAN, a=0 b=1 c=1),
                    D: 1/2 (D(x) - 1)^2 + 1/2 D(G(z))^2, G: 1/2 (D(G(z)) - 1)^2.
  'wasserstein'     Arjovsky et al. 2017, D: D(G(z)) - D(x), G: -D(G(z));
                    pair it with `gradient_penalty` (WGAN-GP, Gulrajani 2017).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

# kind -> loss, one table per network; filled by @register below (a new kind is a
# decorated function for D and one for G, next to these).
DISCRIMINATOR_LOSSES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {}
GENERATOR_LOSSES: dict[str, Callable[[jax.Array], jax.Array]] = {}


def register(kind: str, network: str) -> Callable[[Callable], Callable]:
  """Registers the decorated loss as `kind`'s loss for `network`.

  Args:
    kind: the loss's name in configs (`loss=...`).
    network: 'discriminator' (a function of real and fake logits) or
      'generator' (a function of fake logits).
  """
  table = {"discriminator": DISCRIMINATOR_LOSSES, "generator": GENERATOR_LOSSES}.get(network)
  if table is None:
    raise ValueError(f"losses.adversarial.register: network must be 'discriminator' or "
                     f"'generator', got {network!r}")

  def decorator(fn: Callable) -> Callable:
    if kind in table:
      raise ValueError(f"losses.adversarial: {network} loss {kind!r} is already registered")
    table[kind] = fn
    return fn

  return decorator


def kinds() -> tuple[str, ...]:
  """The loss kinds with both a discriminator and a generator loss."""
  return tuple(k for k in DISCRIMINATOR_LOSSES if k in GENERATOR_LOSSES)


def _lookup(table: dict, kind: str, fn: str) -> Callable:
  if kind not in kinds():
    raise ValueError(f"losses.adversarial.{fn}: kind must be one of {kinds()}, got {kind!r}")
  return table[kind]


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array,
                       kind: str = "non_saturating") -> jax.Array:
  """The discriminator's loss on one batch of real and one of fake examples.

  Args:
    real_logits: float [B] (or any shape), D's outputs on real data.
    fake_logits: float [B'] (or any shape), D's outputs on generated data.
    kind: one of `kinds()`.

  Returns:
    float32 scalar; the sum of the real-term mean and the fake-term mean.
  """
  loss = _lookup(DISCRIMINATOR_LOSSES, kind, "discriminator_loss")
  return loss(jnp.asarray(real_logits, jnp.float32), jnp.asarray(fake_logits, jnp.float32))


def generator_loss(fake_logits: jax.Array,
                   kind: str = "non_saturating") -> jax.Array:
  """The generator's loss given D's outputs on generated data.

  Args:
    fake_logits: float [B] (or any shape), D's outputs on G's samples.
    kind: one of `kinds()`.

  Returns:
    float32 scalar.
  """
  return _lookup(GENERATOR_LOSSES, kind, "generator_loss")(jnp.asarray(fake_logits, jnp.float32))


@register("non_saturating", "discriminator")
def non_saturating_discriminator(real_logits, fake_logits):
  # -log sigmoid(r) = softplus(-r); -log(1 - sigmoid(f)) = softplus(f).
  return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


@register("non_saturating", "generator")
def non_saturating_generator(fake_logits):
  return jnp.mean(jax.nn.softplus(-fake_logits))


@register("hinge", "discriminator")
def hinge_discriminator(real_logits, fake_logits):
  return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))


@register("hinge", "generator")
@register("wasserstein", "generator")
def negated_critic_generator(fake_logits):
  return -jnp.mean(fake_logits)


@register("least_squares", "discriminator")
def least_squares_discriminator(real_logits, fake_logits):
  return 0.5 * jnp.mean(jnp.square(real_logits - 1.0)) + 0.5 * jnp.mean(jnp.square(fake_logits))


@register("least_squares", "generator")
def least_squares_generator(fake_logits):
  return 0.5 * jnp.mean(jnp.square(fake_logits - 1.0))


@register("wasserstein", "discriminator")
def wasserstein_discriminator(real_logits, fake_logits):
  return jnp.mean(fake_logits) - jnp.mean(real_logits)


def _per_example_grad_sq_norm(discriminator: Callable[[jax.Array], jax.Array],
                              x: jax.Array) -> jax.Array:
  """||d D(x_i) / d x_i||^2 for every example; D must act per example."""
  # Summing the outputs is exact for per-example gradients as long as D has no
  # cross-example interaction (use batch_stats in inference mode, no batch norm
  # in training mode inside the penalty).
  grads = jax.grad(lambda v: jnp.sum(discriminator(v)))(x)
  return jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=-1)


def gradient_penalty(discriminator: Callable[[jax.Array], jax.Array],
                     real: jax.Array, fake: jax.Array, key: jax.Array | None,
                     target: float = 1.0,
                     eps: jax.Array | None = None) -> jax.Array:
  """WGAN-GP penalty E[(||grad D(x_hat)|| - target)^2] (Gulrajani et al. 2017).

  x_hat = eps * real + (1 - eps) * fake with eps ~ U[0, 1] per example.
  Multiply by lambda (10 in the paper) yourself.

  Args:
    discriminator: maps float [B, ...] to float [B]; closes over its params.
    real: float [B, H, W, C], real images (any range D accepts).
    fake: float [B, H, W, C], generated images, same shape as `real`.
    key: PRNG key for the interpolation weights (unused when `eps` is given).
    target: the gradient norm the penalty pulls towards (1 in the paper).
    eps: optional float [B] in [0, 1], the interpolation weights themselves
      (lets a caller draw them per example, independently of the batch split).

  Returns:
    float32 scalar.
  """
  if real.shape != fake.shape:
    raise ValueError(f"losses.gradient_penalty: real and fake must have the "
                     f"same shape, got {real.shape} and {fake.shape}")
  eps_shape = (real.shape[0],) + (1,) * (real.ndim - 1)
  if eps is None:
    eps = jax.random.uniform(key, eps_shape, dtype=real.dtype)
  eps = jnp.reshape(eps, eps_shape).astype(real.dtype)
  x_hat = eps * real + (1.0 - eps) * jax.lax.stop_gradient(fake)
  norms = jnp.sqrt(_per_example_grad_sq_norm(discriminator, x_hat) + 1e-12)
  return jnp.mean(jnp.square(norms - target))


def r1_penalty(discriminator: Callable[[jax.Array], jax.Array],
               real: jax.Array) -> jax.Array:
  """R1 penalty E_real[||grad_x D(x)||^2] (Mescheder et al. 2018).

  The paper's regulariser is (gamma / 2) times this value; multiply yourself.

  Args:
    discriminator: maps float [B, ...] to float [B]; closes over its params.
    real: float [B, H, W, C], real images.

  Returns:
    float32 scalar.
  """
  return jnp.mean(_per_example_grad_sq_norm(discriminator, real))
