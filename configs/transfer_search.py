"""The fine-tune recipe search behind configs/completion.py's `finetune` arm.

  JAX_COMPILATION_CACHE_DIR=runs/jax_cache \
    python scripts/sweep.py --config configs/transfer_search.py --root runs/transfer_search

Every setting is the completion `finetune` arm (LP-FT of the ImageNet
EfficientNet-Lite0 at 96 px, configs/completion.py FINETUNE) with one change,
trained on the k = 10, seed 0 subset of mnist5k minus its validation images
(the same k - val / val split every completion arm uses). The sweep report's
'chosen (val)' row picks the setting with the best validation accuracy, then
validation loss; test accuracy is reported but never used to choose.

Settings (the '_setting' label):
  lpft          FINETUNE as it is (head from the logistic probe, lr 3e-4)
  lpft_lr1e-3   the same with a 3.3x larger learning rate
  random_head   new random head (no LP-FT), lr 3e-4

Variants: '' (the three settings), 'quick' (lpft only, 5 steps: a smoke
run).
"""
from research import config_lib

_completion = config_lib.sibling(__file__, "completion")
SETTINGS = {
    "lpft": {},
    "lpft_lr1e-3": {"optimizer.lr": 1e-3},
    "random_head": {"init.head_from_probe": ""},
}
K, SEED = 10, 0


def get_config(arg: str = ""):
  config_lib.variants(arg, ("quick",), __file__)
  return _completion.get_config("full")


def get_sweep(arg: str = ""):
  args = config_lib.variants(arg, ("quick",), __file__)
  settings = {"lpft": {}} if "quick" in args else SETTINGS
  runs = []
  for name, extra in settings.items():
    run = {"_setting": name, "data.few_shot_k": K, "seed": SEED, "data.few_shot_seed": SEED,
           "data.few_shot_val": _completion.val_per_class(K), **_completion.FINETUNE, **extra}
    if "quick" in args:
      run.update({"num_steps": 5, "optimizer.warmup_steps": 1})
    runs.append(run)
  return runs


def sweep_options(arg: str = ""):
  del arg
  return dict(seed_axis="seed", group_by=["_setting"],
              metrics=["accuracy", "val_accuracy", "val_loss"], plot_metric="val_accuracy",
              x_axis="_setting", parallel=1,
              select=dict(label="chosen (val)", axis="_setting",
                          within=["data.few_shot_k", "seed"],
                          by=[["val_accuracy", "max"], ["val_loss", "min"]]))

