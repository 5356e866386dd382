"""Linear probes on frozen features, in JAX (jitted; seconds on the CPU).

  ridge_fit(x, onehot, l2)            closed-form ridge regression to one-hot
                                      targets (big_vision's few-shot evaluator)
  logistic_fit(x, labels, k, l2)      multinomial logistic regression, full
                                      batch, L-BFGS (optax)
  select_l2(fit, predict, ...)        the L2 strength of a grid with the best
                                      validation accuracy
  fit_probe(kind, train, val, ...)    centre and scale the training features,
                                      choose L2 on validation, return a head
                                      (w, b) acting on the RAW features

Conventions. Features x: float32 [N, D]; labels int [N] in [0, K). A head is
(w [D, K], b [K]) with logits x @ w + b. The bias is never penalised.
  ridge:    min ||Xc w - Yc||^2 + l2 ||w||^2 with Xc, Yc centred, b = mean(Y) - mean(X) w
  logistic: min mean_i CE(x_i w + b, y_i) + l2 / 2 ||w||^2, i.e. scikit-learn's
            LogisticRegression(C) with l2 = 1 / (C * N).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

RIDGE_GRID = tuple(float(v) for v in 2.0 ** np.arange(-10, 11, 2))
LOGISTIC_GRID = tuple(float(v) for v in 10.0 ** np.arange(-5.0, 0.01, 0.5))


@jax.jit
def ridge_fit(x: jax.Array, targets: jax.Array, l2: float) -> tuple[jax.Array, jax.Array]:
  """Closed-form ridge: x float [N, D], targets float [N, K], l2 > 0 -> (w [D, K], b [K]).

  Solved in the smaller of the primal (D x D) and dual (N x N) forms (equal).
  """
  mx, my = jnp.mean(x, 0), jnp.mean(targets, 0)
  xc, yc = x - mx, targets - my
  n, d = x.shape
  if d <= n:
    w = jnp.linalg.solve(xc.T @ xc + l2 * jnp.eye(d, dtype=x.dtype), xc.T @ yc)
  else:
    w = xc.T @ jnp.linalg.solve(xc @ xc.T + l2 * jnp.eye(n, dtype=x.dtype), yc)
  return w, my - mx @ w


def logistic_loss(params, x, labels, l2):
  """mean cross-entropy + l2 / 2 * ||w||^2 (bias unpenalised); labels int [N]."""
  w, b = params
  logp = jax.nn.log_softmax(x @ w + b)
  ce = -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))
  return ce + 0.5 * l2 * jnp.sum(w * w)


@functools.partial(jax.jit, static_argnames=("num_classes", "max_iter"))
def logistic_fit(x: jax.Array, labels: jax.Array, num_classes: int, l2: float,
                 max_iter: int = 500, tol: float = 1e-6):
  """Multinomial logistic regression by L-BFGS from zero.

  Args:
    x: float32 [N, D]; labels: int [N] in [0, num_classes); l2 >= 0.
    max_iter: iteration cap; tol: stop when the gradient norm is below it.

  Returns:
    ((w [D, K], b [K]), final objective value, iterations run).
  """
  params = (jnp.zeros((x.shape[1], num_classes), x.dtype), jnp.zeros((num_classes,), x.dtype))
  fun = lambda p: logistic_loss(p, x, labels, l2)
  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(fun)

  def step(carry):
    p, state = carry
    value, grad = value_and_grad(p, state=state)
    updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=fun)
    return optax.apply_updates(p, updates), state

  def keep_going(carry):
    _, state = carry
    count = optax.tree_utils.tree_get(state, "count")
    grad = optax.tree_utils.tree_get(state, "grad")
    return (count == 0) | ((count < max_iter) & (optax.tree_utils.tree_norm(grad) >= tol))

  params, state = jax.lax.while_loop(keep_going, step, (params, opt.init(params)))
  return params, fun(params), optax.tree_utils.tree_get(state, "count")


@jax.jit
def accuracy(x, labels, w, b):
  return jnp.mean(jnp.argmax(x @ w + b, -1) == labels)


@dataclasses.dataclass
class Probe:
  """A fitted probe: head (w [D, K], b [K]) on raw features, the chosen l2,
  and the validation accuracy of every l2 in the grid."""
  w: np.ndarray
  b: np.ndarray
  l2: float
  grid: tuple[float, ...]
  val_accuracy: tuple[float, ...]

  def logits(self, x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32) @ self.w + self.b


@jax.jit
def mean_cross_entropy(x, labels, w, b):
  logp = jax.nn.log_softmax(x @ w + b)
  return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


def select_l2(fit: Callable[[float], tuple], x_val, y_val, grid: Sequence[float]):
  """((w, b), l2, val accuracies): the grid value with the best validation
  accuracy, ties broken by the lower validation cross-entropy (the rule the
  sweep's 'best (val)' selection uses; a few validation images tie often)."""
  if not grid:
    raise ValueError("select_l2: empty l2 grid")
  heads, accs, losses = [], [], []
  for l2 in grid:
    w, b = fit(float(l2))
    heads.append((w, b))
    accs.append(float(accuracy(x_val, y_val, w, b)))
    losses.append(float(mean_cross_entropy(x_val, y_val, w, b)))
  best = max(range(len(grid)), key=lambda i: (accs[i], -losses[i]))
  return heads[best], float(grid[best]), tuple(accs)


def fit_probe(kind: str, x_train, y_train, x_val, y_val, num_classes: int,
              grid: Sequence[float] | None = None, max_iter: int = 500) -> Probe:
  """Fits a 'ridge' or 'logistic' probe, L2 chosen on (x_val, y_val).

  Features are centred with the training mean and divided by ONE scale, the
  root mean square of the centred training features, so an L2 grid means the
  same for any backbone; the returned head folds that in and acts on raw
  features. Not per-feature standardisation: with few training images many
  pooled channels are nearly constant (a tenth of Lite0's 1280 had std < 5e-4
  on 80 mnist5k images), and dividing by their std blew their test values up
  by up to 5e5. Without validation examples the grid's middle value is used.
  """
  if kind not in ("ridge", "logistic"):
    raise ValueError(f"fit_probe: kind must be 'ridge' or 'logistic', got {kind!r}")
  grid = tuple(grid or (RIDGE_GRID if kind == "ridge" else LOGISTIC_GRID))
  x_train = np.asarray(x_train, np.float32)
  mean = x_train.mean(0)
  scale = max(float(np.sqrt(np.mean(np.square(x_train - mean)))), 1e-12)
  z = lambda x: jnp.asarray((np.asarray(x, np.float32) - mean) / scale)
  zt, yt = z(x_train), jnp.asarray(y_train, jnp.int32)
  if kind == "ridge":
    onehot = jax.nn.one_hot(yt, num_classes)
    fit = lambda l2: ridge_fit(zt, onehot, l2)
  else:
    fit = lambda l2: logistic_fit(zt, yt, num_classes, l2, max_iter)[0]
  if x_val is None or len(x_val) == 0:
    grid = (grid[len(grid) // 2],)
    (w, b), l2, accs = fit(grid[0]), grid[0], (float("nan"),)
  else:
    (w, b), l2, accs = select_l2(fit, z(x_val), jnp.asarray(y_val, jnp.int32), grid)
  w = np.asarray(w) / scale
  b = np.asarray(b) - mean @ w
  return Probe(w=w.astype(np.float32), b=b.astype(np.float32), l2=l2, grid=grid,
               val_accuracy=accs)
