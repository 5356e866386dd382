"""The data-completion ablation: few-shot mnist5k, k labelled images per class.

  python scripts/sweep.py --config configs/completion.py:quick --root runs/completion_quick
  python scripts/sweep.py --config configs/completion.py:full --root runs/completion

Every arm trains for the same fixed number of steps and batch size and
reports the final checkpoint's test metrics: no test image is used for
training or for choosing anything (no best-checkpoint selection, no early
stopping). Of the k labelled images per class, val_per_class(k) = max(1,
k // 5) are held out for validation (data.few_shot_val) in EVERY arm: the
classifiers and the generators train on the other k - val_per_class, and the
'best (val)' row picks, for each (k, seed), the arm with the highest
validation accuracy and reports that arm's test accuracy.

Arms (the '_arm' label of each run):
  base          real k-shot data only (small CNN, gray replicated to 3
                channels so the RGB augmentation policies apply)
  aug           + TrivialAugmentWide (parameter-free, chosen a priori)
  vae@r, gan@r  + samples of a class-conditional VAE / SNGAN trained on the
                same k-shot training images only (scripts/complete.py, once per
                (k, seed), shared by every arm that uses it), mixed into each
                batch at ratio r
  probe         frozen ImageNet EfficientNet-Lite0 features at 224 px (gray
                replicated, ImageNet normalisation; task 'probe', cached on
                disk) + a multinomial logistic probe on the k - val training
                images, L2 chosen on the validation images; no gradient steps
  finetune      LP-FT of the same Lite0 at 96 px (FINETUNE below): head
                initialised from the logistic probe at 96 px, then every
                layer trained with BatchNorm statistics frozen, layer-wise LR
                decay, warm-up + cosine and TrivialAugmentWide
  (probe and finetune: full only; one Lite0 step costs tens of small-CNN
  steps on the CPU)
  aug+vae@0.5, aug+gan@0.5   combinations (full only)
  best (val)    added by the sweep report: per (k, seed) the arm chosen on
                the validation split (see sweep_options)

Variants: quick (k = 10, 50; seed 0; r = 0.5; no combined arms, no
probe or finetune; short budgets: a few minutes on a 2-core CPU), full (k = 10, 50,
100; seeds 0, 1, 2; r = 0.25, 0.5; every arm; 300 classifier steps of 64,
cVAE 2000 steps, SNGAN 1000 steps at width 16: about 75 minutes on a 2-core
CPU without probe and finetune; on the shared 2-core CPU at load average ~10
the 9 probe runs took 29 minutes, the first extracting and caching the
features, and the 9 finetune runs 45 minutes). The seed picks the k-shot
subset, its validation split and the training randomness.

New arms can be run alone and merged into an earlier sweep's table:

  python scripts/sweep.py --config configs/completion.py:full --root runs/new \
      --only _arm=probe,finetune
  python scripts/completion_report.py --root runs/merged --config configs/completion.py:full \
      --from_csv research/docs/completion/runs.csv --from_csv runs/new/runs.csv
"""
import importlib.util
import os
import re

import ml_collections

_HERE = os.path.dirname(os.path.abspath(__file__))
_VARIANTS = ("quick", "full")
AUGMENT = "trivial_augment_wide"
GENERATORS = {"vae": "mnist5k_cvae.py", "gan": "mnist5k_cgan.py"}
_SYNTHETIC = re.compile(
    r"\{root\}/generators/(quick|full)/(vae|gan)_k(\d+)_s(\d+)/samples\.npz")


def _variant(arg: str) -> str:
  arg = arg or "full"
  if arg not in _VARIANTS:
    raise ValueError(f"configs/completion.py: unknown variant {arg!r}; valid: {_VARIANTS}")
  return arg


def _load(name):
  spec = importlib.util.spec_from_file_location(f"_completion_{name[:-3]}",
                                                os.path.join(_HERE, name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def val_per_class(k: int) -> int:
  """Validation images per class held out of the k-shot set (20%, at least 1)."""
  return max(1, k // 5)


LITE0 = {"name": "efficientnet_lite0", "num_classes": 10, "dropout_rate": 0.2,
         "drop_connect_rate": 0.2}
# Frozen Lite0 features at its native 224 px + a multinomial logistic probe
# (L2 chosen on the validation images); no gradient steps.
PROBE = {
    "task": "probe", "model": LITE0, "input.size": 224, "input.normalize": "imagenet",
    "init.checkpoint": "efficientnet_lite0", "init.dont_load": ("head/.*",),
    "num_steps": 0, "probe.kind": "logistic",
}
# LP-FT at the cheap input size 96 (224 costs ~5x more per step). Settings
# fixed a priori, not searched: one run costs ~10 minutes on the shared 2-core
# CPU, so a validation search over them did not fit (research/transfer/README.md).
FINETUNE = {
    "model": LITE0, "input.size": 96, "input.normalize": "imagenet",
    "init.checkpoint": "efficientnet_lite0", "init.dont_load": ("head/.*",),
    "init.head_from_probe": "logistic", "bn_mode": "frozen_stats",
    "optimizer.lr": 3e-4, "optimizer.layer_decay": 0.7, "augment": AUGMENT,
    "batch_size": 32, "num_steps": 60, "optimizer.warmup_steps": 6,
    # jit + shard_map executables go to the persistent compilation cache
    # (JAX_COMPILATION_CACHE_DIR), so only the first run compiles.
    "parallel": "shard_map",
}


def get_config(arg: str = ""):
  """The classifier every arm trains (arm differences are sweep overrides)."""
  variant = _variant(arg)
  c = _load("mnist5k_classify.py").get_config()
  c.data.few_shot_k = 10
  c.input.channels = 3
  c.model.width = 32
  c.batch_size = 64
  c.data.few_shot_val = val_per_class(c.data.few_shot_k)
  c.num_steps = 300 if variant == "full" else 150
  c.optimizer.warmup_steps = c.num_steps // 10
  c.eval_every = c.num_steps        # evaluate once, at the end
  c.checkpoint_every = max(c.num_steps // 4, 1)
  c.log_every = min(50, c.num_steps)
  c.best_metric = ""                # no checkpoint selection on test metrics
  c.init = ml_collections.ConfigDict(dict(checkpoint="", dont_load=(), head_from_probe=""))
  c.optimizer.layer_decay = 0.0
  c.bn_mode = "train"
  c.parallel = "pmap"
  c.probe = ml_collections.ConfigDict(dict(kind="logistic", l2_grid=(), cache_dir="",
                                           batch_size=64))
  c.progress = False
  return c


def generator_overrides(kind: str, variant: str) -> list[str]:
  """Budget of the class-conditional generators (scripts/complete.py flags).

  Fixed budgets, no selection: the last checkpoint generates. The quick GAN
  is tiny because one SNGAN step costs ~1 s on a loaded 2-core CPU.
  """
  full = variant == "full"
  if kind == "vae":
    steps, width = (2000, 32) if full else (200, 32)
    extra = [f"--config.kl_warmup_steps={steps // 5}", "--config.iwae_samples=0",
             f"--config.model.width={width}", "--config.model.hidden=128"]
  else:
    steps, width = (1000, 16) if full else (150, 16)
    extra = ["--config.model.latent_dim=64", f"--config.model.generator.width={width}",
             f"--config.model.discriminator.width={width}", "--config.n_critic=1"]
  return ["--config.progress=false", "--config.best_metric=", "--config.batch_size=64",
          f"--config.num_steps={steps}", f"--config.eval_every={steps}",
          f"--config.log_every={min(50, steps)}",
          f"--config.checkpoint_every={max(steps // 4, 1)}"] + extra


def synthetic_path(variant: str, kind: str, k: int, seed: int) -> str:
  """Where the sweep's prerequisite job writes the (variant, kind, k, seed) generator's samples."""
  return f"{{root}}/generators/{variant}/{kind}_k{k}_s{seed}/samples.npz"


def get_sweep(arg: str = ""):
  """One override dict per run: arms x k x seeds (see module doc)."""
  variant = _variant(arg)
  full = variant == "full"
  ks = (10, 50, 100) if full else (10, 50)
  seeds = (0, 1, 2) if full else (0,)
  ratios = (0.25, 0.5) if full else (0.5,)
  runs = []
  for k in ks:
    for seed in seeds:
      arms = [("base", {}), ("aug", {"augment": AUGMENT})]
      for kind in GENERATORS:
        for r in ratios:
          mix = {"data.synthetic": synthetic_path(variant, kind, k, seed), "data.synthetic_ratio": r}
          arms.append((f"{kind}@{r}", mix))
          if full and r == max(ratios):
            arms.append((f"aug+{kind}@{r}", {"augment": AUGMENT, **mix}))
      if full:
        arms += [("probe", PROBE), ("finetune", FINETUNE)]
      for arm, extra in arms:
        runs.append({"_arm": arm, "data.few_shot_k": k, "seed": seed,
                     "data.few_shot_seed": seed, "data.few_shot_val": val_per_class(k),
                     **extra})
  return runs


def _same_data_flags(overrides) -> list[str]:
  """The run's own data-block overrides (e.g. `--set data.name=folder:DIR`), so that its
  generator trains on the same images; the k-shot fields are set by complete.py."""
  skip = ("data.few_shot_", "data.synthetic")
  return [f"--config.{key}={value}" for key, value in overrides.items()
          if key.startswith("data.") and not key.startswith(skip)]


def get_prerequisites(overrides):
  """The generator a run's data.synthetic needs, trained on that run's k-shot subset."""
  path = overrides.get("data.synthetic", "")
  if not path:
    return []
  match = _SYNTHETIC.fullmatch(path)
  if not match:
    raise ValueError(f"configs/completion.py: data.synthetic={path!r} is not a "
                     f"generator path like {synthetic_path('quick', 'vae', 10, 0)!r}")
  variant, kind = match.group(1), match.group(2)
  k, seed = int(match.group(3)), int(match.group(4))
  if overrides.get("data.few_shot_val", 0) != val_per_class(k):
    raise ValueError(f"configs/completion.py: data.few_shot_val="
                     f"{overrides.get('data.few_shot_val', 0)} but the generators hold "
                     f"out val_per_class({k}) = {val_per_class(k)}")
  if (k, seed) != (overrides["data.few_shot_k"], overrides["data.few_shot_seed"]):
    raise ValueError(f"configs/completion.py: run with data.few_shot_k="
                     f"{overrides['data.few_shot_k']}, data.few_shot_seed="
                     f"{overrides['data.few_shot_seed']} would use a generator trained on "
                     f"another subset (k={k}, seed={seed})")
  return [dict(name=f"generators/{variant}/{kind}_k{k}_s{seed}",
               # research.complete: the entry point scripts/complete.py wraps.
               command=["-m", "research.complete",
                        "--config", os.path.join(_HERE, GENERATORS[kind]),
                        "--k", str(k), "--seed", str(seed), "--out", "{dir}",
                        "--num_per_class", "500"]
               + generator_overrides(kind, variant)
               + [f"--config.data.few_shot_val={val_per_class(k)}"]
               + _same_data_flags(overrides),
               output="{dir}/samples.npz")]


def sweep_options(arg: str = ""):
  """Defaults for scripts/sweep.py (its flags override them)."""
  del arg
  return dict(seed_axis="seed", group_by=["_arm", "data.few_shot_k"],
              metrics=["accuracy", "f1", "val_accuracy"], plot_metric="accuracy",
              x_axis="data.few_shot_k", parallel=2,
              # Per (k, seed), the arm a researcher would pick without test data.
              select=dict(label="best (val)", axis="_arm",
                          within=["data.few_shot_k", "seed"],
                          by=[["val_accuracy", "max"], ["val_loss", "min"]]))
