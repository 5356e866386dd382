"""LP-FT (Kumar et al. 2022): initialise the new head from a linear probe on
the pretrained backbone's frozen features, then fine-tune everything.

A randomly initialised head's large early gradients distort the pretrained
features before the head is any good; starting from the probe's head (the
optimum with the backbone frozen) the fine-tune only refines. Selected by
`init.head_from_probe` ('logistic' | 'ridge'; '' = off) in the classify task,
after the pretrained weights are loaded. The probe is fitted on the run's own
training images (the k-shot subset minus validation), with its L2 chosen on
the run's validation images, on features computed exactly as the fine-tune
will see them at evaluation (the task's input pipeline, eval-mode BatchNorm).
"""
from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp

from research import data
from research.transfer import features, probes


def head_from_probe(variables: Any, model, input_fn: Callable, data_cfg, kind: str,
                    num_classes: int, head: str = "head", batch_size: int = 64,
                    progress: bool = False, mode: str = "pmap"
                    ) -> tuple[dict, probes.Probe | None]:
  """Returns (variables with params[head] = the probe's (kernel, bias), the probe).

  Args:
    variables: {'params', 'batch_stats'?} of a model whose
      `apply(..., return_features=True)` returns (logits, pooled features
      [N, D]) and whose classifier is a Dense named `head` ([D, K] kernel).
    model: the Flax module; input_fn: stored images -> model input.
    data_cfg: the run's `data` config (few-shot subset, validation split).
    kind: 'logistic' or 'ridge' (research.transfer.probes.fit_probe).
    mode: 'pmap' | 'shard_map', the extraction's engine (research.parallel).

  Under abstract evaluation (`jax.eval_shape`, as `trainer.load_state` builds
  the state a checkpoint is restored into) only shapes matter and no image
  can be run: the variables come back unchanged and the probe is None.
  """
  if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(variables)):
    return variables, None
  variables = flax.core.unfreeze(variables)
  params = variables["params"]
  if head not in params or "kernel" not in params[head]:
    raise ValueError(f"head_from_probe: no Dense {head!r} in params "
                     f"(top-level names: {sorted(params)})")
  fn = features.pooled_feature_fn(model, input_fn)
  frozen = {c: v for c, v in variables.items() if c in ("params", "batch_stats")}
  train, val = data.load_train(data_cfg), data.load_val(data_cfg)
  extract = lambda arrays: features.extract(fn, frozen, arrays["image"], batch_size,
                                            mode=mode, progress=progress)
  x_val = extract(val) if val else None
  probe = probes.fit_probe(kind, extract(train), train["label"], x_val,
                           val["label"] if val else None, num_classes)
  kernel = params[head]["kernel"]
  if kernel.shape != probe.w.shape:
    raise ValueError(f"head_from_probe: probe head {probe.w.shape} != params/{head}/kernel "
                     f"{kernel.shape}")
  params[head] = {**params[head], "kernel": jnp.asarray(probe.w, kernel.dtype),
                  "bias": jnp.asarray(probe.b, kernel.dtype)}
  return variables, probe
