"""Compress a trained classifier many ways and tabulate size against accuracy.

Everything takes `(apply_fn, variables, batches)`, so it works on any Flax
classifier whether or not it came from the trainer:
  apply_fn(variables, images) -> logits [N, C], in inference mode;
  batches: iterables of (images float32 [N, H, W, C], labels int [N],
           mask float [N] with 1 for real examples, 0 for padding).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.compress import pruning
from research.compress import quantization as quant

Batch = tuple[Any, Any, Any]


@dataclasses.dataclass
class Row:
  """One line of the report."""
  model: str
  method: str          # 'float', 'prune', 'ptq', 'qat'
  sparsity: float      # fraction of zero weights among pruned kernels, [0, 1]
  pattern: str         # 'unstructured', '2:4', ... or '-'
  bits: int            # 32 for float
  bytes_stored: int    # all variables as stored (dense arrays, int8 kernels)
  bytes_sparse: int    # kernels as bitmap + nonzero values (pruned rows)
  accuracy: float      # in [0, 1], on the main eval split
  val_accuracy: float | None = None  # on the validation split, when there is one


def accuracy(apply_fn: Callable, variables: Any, batches: Iterable[Batch]) -> float:
  """Masked top-1 accuracy in [0, 1]."""
  fn = jax.jit(lambda v, x: jnp.argmax(apply_fn(v, x), -1))
  correct = total = 0.0
  for images, labels, mask in batches:
    pred = np.asarray(fn(variables, images))
    mask = np.asarray(mask, np.float64)
    correct += float(np.sum((pred == np.asarray(labels)) * mask))
    total += float(np.sum(mask))
  if total == 0:
    raise ValueError("compress.report.accuracy: no (unmasked) eval examples")
  return correct / total


def sparse_bytes(params: Any, selected: Any) -> int:
  """Bytes with selected kernels stored as a 1-bit mask plus nonzero values."""
  total = 0
  for x, s in zip(jax.tree.leaves(params), jax.tree.leaves(selected)):
    x = np.asarray(x)
    if s:
      total += int(np.ceil(x.size / 8)) + int(np.count_nonzero(x)) * x.itemsize
    else:
      total += x.nbytes
  return total


def finetune(forward: Callable, variables: Any, batches: Iterable[Batch],
             steps: int, tx: optax.GradientTransformation) -> Any:
  """A short supervised fine-tune of `variables['params']` (other collections
  such as BatchNorm statistics stay frozen).

  Args:
    forward: (variables, images) -> logits; e.g. a QAT apply function.
    batches: an iterator yielding at least `steps` training batches.
    steps: number of updates.
    tx: the optimizer, possibly `pruning.wrap`-ed.
  Returns:
    (variables with updated params, final optimizer state).
  """
  params = variables["params"]
  rest = {k: v for k, v in variables.items() if k != "params"}

  @jax.jit
  def step(params, opt_state, images, labels, mask):
    def loss_fn(p):
      logits = forward({"params": p, **rest}, images)
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      return jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1.0)
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  opt_state = tx.init(params)
  it = iter(batches)
  for _ in range(steps):
    images, labels, mask = next(it)
    params, opt_state = step(params, opt_state, images, labels,
                             jnp.asarray(mask, jnp.float32))
  return {"params": params, **rest}, opt_state


def compress_and_evaluate(
    apply_fn: Callable, variables: Any, eval_batches: Callable[[], Iterable[Batch]],
    calib_batches: Sequence[Any], *, model: str = "model",
    val_batches: Callable[[], Iterable[Batch]] | None = None,
    sparsities: Sequence[float] = (0.5, 0.75, 0.9),
    n_m: Sequence[str] = ("2:4",), bits: Sequence[int] = (8, 4),
    calibration: Sequence[str] = ("minmax", "percentile"),
    train_batches: Callable[[], Iterable[Batch]] | None = None,
    finetune_steps: int = 0, lr: float = 1e-4) -> list[Row]:
  """Float baseline, one-shot pruning (+ optional fine-tune), PTQ and QAT.

  Args:
    apply_fn, variables: the trained float classifier.
    eval_batches: returns a fresh iterable of eval batches each call.
    val_batches: the same for a validation split (optional): every row then
      also has `val_accuracy`.
    calib_batches: a few image batches for activation calibration.
    sparsities / n_m: unstructured sparsities and N:M patterns to try.
    bits / calibration: PTQ bit widths and calibration methods.
    train_batches: returns an iterator of training batches; needed for
      fine-tuning pruned models (with the pruning wrapper, masks fixed) and QAT.
    finetune_steps: 0 -> one-shot pruning only and no QAT rows.
  Returns:
    The rows of the table, float baseline first.
  """
  def evaluate(fn, v):
    """(accuracy on eval_batches, accuracy on val_batches or None)."""
    val = accuracy(fn, v, val_batches()) if val_batches is not None else None
    return accuracy(fn, v, eval_batches()), val

  sel = pruning.prunable(variables["params"], pruning.SparsityConfig())
  dense_bytes = quant.stored_bytes(variables)
  other_bytes = dense_bytes - quant.stored_bytes(variables["params"])
  rows = [Row(model, "float", 0.0, "-", 32, dense_bytes, dense_bytes,
              *evaluate(apply_fn, variables))]

  def prune_rows(cfg):
    pruned = {**variables, "params": pruning.prune(variables["params"], cfg)}
    method = "prune (one-shot)"
    if finetune_steps and train_batches is not None:
      tx = pruning.wrap(optax.adam(lr), dataclasses.replace(cfg, start_step=0))
      pruned, _ = finetune(apply_fn, pruned, train_batches(), finetune_steps, tx)
      method = f"prune + {finetune_steps} steps"
    rep = pruning.sparsity_report(pruned["params"])
    rows.append(Row(model, method, rep["_total"], cfg.pattern, 32, dense_bytes,
                    sparse_bytes(pruned["params"], sel) + other_bytes,
                    *evaluate(apply_fn, pruned)))

  for s in sparsities:
    prune_rows(pruning.SparsityConfig(sparsity=s))
  for pattern in n_m:
    prune_rows(pruning.SparsityConfig(pattern=pattern))

  x0 = calib_batches[0]
  layers = quant.find_layers(apply_fn, variables, x0)
  for method in calibration:
    ranges = quant.calibrate(apply_fn, variables, calib_batches, method)
    for b in bits:
      qv = quant.quantize_variables(variables, ranges, b)
      rows.append(Row(model, f"ptq ({method})", 0.0, "-", b,
                      quant.stored_bytes(qv), quant.stored_bytes(qv),
                      *evaluate(quant.integer_apply(apply_fn, b), qv)))

  if finetune_steps and train_batches is not None:
    for b in bits:
      qat_fn = quant.qat_apply(apply_fn, layers, b)
      trained, _ = finetune(qat_fn, variables, train_batches(), finetune_steps,
                            optax.adam(lr))
      ranges = quant.calibrate(apply_fn, trained, calib_batches, "minmax")
      qv = quant.quantize_variables(trained, ranges, b)
      rows.append(Row(model, f"qat + {finetune_steps} steps", 0.0, "-", b,
                      quant.stored_bytes(qv), quant.stored_bytes(qv),
                      *evaluate(quant.integer_apply(apply_fn, b), qv)))
  return rows


def to_markdown(rows: Sequence[Row]) -> str:
  """A markdown table of `rows` (a validation column when the rows have one)."""
  val = any(r.val_accuracy is not None for r in rows)
  head = ("| model | method | pattern | sparsity | bits | bytes stored | "
          "bytes sparse | test accuracy |" + (" val accuracy |" if val else "")
          + "\n|---|---|---|---|---|---|---|---|" + ("---|" if val else ""))
  lines = [head]
  for r in rows:
    line = (f"| {r.model} | {r.method} | {r.pattern} | {r.sparsity:.3f} | "
            f"{r.bits} | {r.bytes_stored} | {r.bytes_sparse} | {r.accuracy:.4f} |")
    if val:
      line += f" {r.val_accuracy:.4f} |" if r.val_accuracy is not None else " |"
    lines.append(line)
  return "\n".join(lines)


def summarize(runs: Sequence[Sequence[Row]]) -> list[dict[str, Any]]:
  """Mean and sample std of each row over several runs (e.g. training seeds).

  Args:
    runs: one list of rows per run, all from the same compression settings, so
      row i is the same method in every run.
  Returns:
    One dict per row: model, method, pattern, bits, n, the mean sparsity and
    byte counts, accuracy_mean / accuracy_std (and val_accuracy_* when every
    run has a validation accuracy). std is 0 for a single run.
  """
  if not runs:
    raise ValueError("compress.report.summarize: no runs")
  keys = [[(r.method, r.pattern, r.bits) for r in rows] for rows in runs]
  for i, k in enumerate(keys[1:], 1):
    if k != keys[0]:
      raise ValueError(f"compress.report.summarize: run {i} has rows {k}, run 0 has {keys[0]}; "
                       "summarize runs made with the same settings")
  out = []
  for column in zip(*runs):
    r0 = column[0]
    entry = {"model": r0.model, "method": r0.method, "pattern": r0.pattern, "bits": r0.bits,
             "n": len(column)}
    for name in ("sparsity", "bytes_stored", "bytes_sparse"):
      entry[name] = float(np.mean([getattr(r, name) for r in column]))
    names = ["accuracy"] + (["val_accuracy"] if all(r.val_accuracy is not None
                                                    for r in column) else [])
    for name in names:
      values = np.array([getattr(r, name) for r in column], np.float64)
      entry[f"{name}_mean"] = float(values.mean())
      entry[f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    out.append(entry)
  return out


def summary_markdown(summary: Sequence[dict[str, Any]]) -> str:
  """A markdown table of `summarize`'s output: accuracy as mean ± std over n runs."""
  val = all("val_accuracy_mean" in e for e in summary)
  lines = ["| method | pattern | sparsity | bits | bytes stored | bytes sparse | "
           "test accuracy (mean ± std) |" + (" val accuracy (mean ± std) |" if val else "")
           + " n |",
           "|---|---|---|---|---|---|---|" + ("---|" if val else "") + "---|"]
  for e in summary:
    line = (f"| {e['method']} | {e['pattern']} | {e['sparsity']:.3f} | {e['bits']} | "
            f"{e['bytes_stored']:,.0f} | {e['bytes_sparse']:,.0f} | "
            f"{e['accuracy_mean']:.4f} ± {e['accuracy_std']:.4f} |")
    if val:
      line += f" {e['val_accuracy_mean']:.4f} ± {e['val_accuracy_std']:.4f} |"
    lines.append(line + f" {e['n']} |")
  return "\n".join(lines)


def plot_accuracy_vs_sparsity(rows: Sequence[Row], path: str) -> None:
  """PNG: test accuracy against sparsity (float + unstructured/N:M pruning)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(5, 3.5))
  base = [r for r in rows if r.method == "float"]
  unstr = sorted([r for r in rows if r.method.startswith("prune")
                  and r.pattern == "unstructured"], key=lambda r: r.sparsity)
  pts = base + unstr
  ax.plot([r.sparsity for r in pts], [r.accuracy for r in pts], "o-",
          label="unstructured magnitude")
  for r in rows:
    if r.method.startswith("prune") and r.pattern not in ("unstructured", "-"):
      ax.plot([r.sparsity], [r.accuracy], "s", label=r.pattern)
  ax.set_xlabel("sparsity (fraction of zero kernel weights)")
  ax.set_ylabel("test accuracy")
  ax.set_title(rows[0].model if rows else "")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
