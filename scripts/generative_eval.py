"""What a trained GAN / VAE does for a classifier: CAS, classifier-feature FD/KID, IWAE NLL.

  python scripts/generative_eval.py --generator runs/cgan --classifier runs/default \
      --out runs/cgan_eval [--num 4000] [--cas_steps 1500] [--iwae_k 1000]

Steps (each writes into --out, and results.json collects them):
  1. samples: what `scripts/sample.py --num_npz NUM` writes (research.tasks.generation)
     -> OUT/samples/{grid,interpolation,reconstruction}.png and samples.npz
     (class-balanced labelled samples, NUM rounded up to a multiple of the classes).
  2. CAS (Ravuri & Vinyals 2019): a classifier trained in-process with the classify config
     (configs/mnist5k_classify.py, the recipe of the real-data classifier) on the
     samples only (data.synthetic = samples.npz, synthetic_ratio = 1), tested
     on the REAL test split; CAS is its final test accuracy.
  3. Frechet distance and KID of generated vs real-test images on the frozen
     classifier's penultimate features (research.metrics.fid), beside the
     real-train vs real-test floor, with the classifier checkpoint's hash.
     Never compare these numbers with Inception FID.
  4. Label agreement: the fraction of the labelled samples that the frozen real
     classifier assigns to the class they were generated for (per class too).
     A quick check that a conditional model is class-consistent, which CAS needs.
  5. VAE only (--iwae_k > 0): test NLL = -L_k (IWAE bound, k samples) in nats and
     bits/dim on the first --iwae_examples real test images.

Wall time of every step is recorded in results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAS_CONFIG = os.path.join(ROOT, "configs", "mnist5k_classify.py")


def classifier_extractor(workdir: str):
  """FeatureExtractor on the penultimate layer of a classify run's latest checkpoint."""
  from research import trainer  # pylint: disable=g-import-not-at-top
  from research.metrics import fid  # pylint: disable=g-import-not-at-top
  from research.tasks.classify import normalize  # pylint: disable=g-import-not-at-top
  task, state = trainer.load_state(workdir)
  variables = {"params": state.params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
  kind = task.config.get("input", {}).get("normalize", "unit")
  step = int(state.step)
  ckpt = os.path.join(workdir, "checkpoints", str(step))
  name = f"{task.config.data.name}_{task.config.model.name}/penultimate"
  return fid.flax_classifier_features(
      name, task.model, variables, checkpoint_hash=fid.hash_path(ckpt),
      preprocess=lambda x: normalize(x, kind)), ckpt


def label_agreement(workdir: str, images: np.ndarray, labels: np.ndarray,
                    batch_size: int = 500) -> dict:
  """How often a classify run's latest checkpoint predicts the conditioning label.

  images: float [N, H, W, C] in [0, 1]; labels: int [N]. Returns the overall
  agreement and one value per class (classes 0..max(labels)).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from research import trainer  # pylint: disable=g-import-not-at-top
  from research.tasks.classify import normalize  # pylint: disable=g-import-not-at-top
  task, state = trainer.load_state(workdir)
  kind = task.config.get("input", {}).get("normalize", "unit")
  predict = jax.jit(lambda x: jnp.argmax(
      task.apply(state.params, state.batch_stats, normalize(x, kind), False)[0], -1))
  pred = np.concatenate([np.asarray(predict(images[i:i + batch_size]))
                         for i in range(0, len(images), batch_size)])
  labels = np.asarray(labels)
  return {"label_agreement": float(np.mean(pred == labels)),
          "label_agreement_per_class": [float(np.mean(pred[labels == c] == c))
                                        for c in range(int(labels.max()) + 1)]}


def iwae_nll(workdir: str, k: int, num_examples: int, chunk: int = 50,
             batch_size: int = 100) -> dict:
  """Test NLL -L_k (nats per image) of a VAE run on its eval split's first examples."""
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from research import data, parallel, trainer  # pylint: disable=g-import-not-at-top
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  config.iwae_samples, config.iwae_chunk = k, min(chunk, k)
  task, state = trainer.load_state(workdir, config=config)
  test = data.load(config.data.name, config.data.eval_split,
                   config.data.get("data_dir") or None, config.data.get("image_size", 0))
  n = min(num_examples, len(test["label"]))
  dp = parallel.DataParallel(task.train_step, task.eval_step,
                             devices=jax.local_devices()[:1])
  sums = None
  for start in range(0, n, batch_size):
    m = min(batch_size, n - start)
    pad = batch_size - m
    batch = {"image": np.pad(test["image"][start:start + m],
                             ((0, pad), (0, 0), (0, 0), (0, 0))),
             "label": np.pad(test["label"][start:start + m], (0, pad)),
             "mask": np.pad(np.ones(m, bool), (0, pad))}
    out = jax.device_get(dp.eval_step(state, dp.put_batch(parallel.shard(batch, 1))))
    sums = out if sums is None else {key: sums[key] + out[key] for key in sums}
  result = task.summarize_eval(sums)
  return {"iwae_k": k, "iwae_examples": n, "nll_nats": result["nll"],
          "bits_per_dim": result.get("bits_per_dim"), "elbo": result["elbo"]}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--generator", required=True, help="GAN or VAE workdir")
  parser.add_argument("--classifier", required=True,
                      help="classify workdir trained on the real training split")
  parser.add_argument("--out", required=True)
  parser.add_argument("--num", type=int, default=4000, help="generated images")
  parser.add_argument("--cas_steps", type=int, default=0,
                      help="classifier steps for CAS (0 = the classify config's)")
  parser.add_argument("--iwae_k", type=int, default=0, help="VAE: k for test NLL")
  parser.add_argument("--iwae_examples", type=int, default=1000)
  parser.add_argument("--skip_cas", action="store_true")
  args = parser.parse_args(argv)
  args.generator, args.classifier, args.out = map(
      os.path.abspath, (args.generator, args.classifier, args.out))
  os.makedirs(args.out, exist_ok=True)
  results_path = os.path.join(args.out, "results.json")
  results = {}
  if os.path.exists(results_path):  # steps already done are kept
    with open(results_path) as f:
      results = json.load(f)
  results.update(generator=args.generator, classifier=args.classifier)
  wall = results.setdefault("wall_s", {})

  def save():
    with open(results_path, "w") as f:
      json.dump(results, f, indent=2)

  samples = os.path.join(args.out, "samples")
  npz = os.path.join(samples, "samples.npz")
  if not os.path.exists(npz):  # class-balanced, as scripts/complete.py draws them
    from research import trainer  # pylint: disable=g-import-not-at-top
    from research.tasks import generation  # pylint: disable=g-import-not-at-top
    t = time.time()
    task, state = trainer.load_state(args.generator)
    task = generation.require(task, args.generator)
    images, labels = generation.generate_balanced(
        task, state, -(-args.num // task.num_classes), seed=7)
    generation.save_pictures(task, state, samples)
    np.savez(npz, image=images, label=labels)
    wall["samples"] = time.time() - t
    save()

  if not args.skip_cas and "cas" not in results:
    from research import config_lib, trainer  # pylint: disable=g-import-not-at-top
    cas_dir = os.path.join(args.out, "cas")
    overrides = {"data.synthetic": npz, "data.synthetic_ratio": 1.0, "progress": False}
    if args.cas_steps:
      overrides["num_steps"] = args.cas_steps
    t = time.time()
    trainer.train_and_evaluate(
        config_lib.apply_overrides(config_lib.load(CAS_CONFIG), overrides), cas_dir)
    wall["cas_train"] = time.time() - t
    with open(os.path.join(cas_dir, "results.json")) as f:
      cas = json.load(f)
    confusion = np.asarray(cas["confusion"], np.float64)
    results["cas"] = cas["accuracy"]
    results["cas_per_class"] = list(np.diag(confusion) / confusion.sum(1))
    results["cas_config"] = {"config": os.path.relpath(CAS_CONFIG, ROOT), **overrides}
    save()

  if "fd" not in results:
    from research import data  # pylint: disable=g-import-not-at-top
    from research.metrics import fid  # pylint: disable=g-import-not-at-top
    t = time.time()
    extractor, ckpt = classifier_extractor(args.classifier)
    with np.load(npz) as f:
      generated = f["image"].astype(np.float32) / 255.0
    real_train = data.load("mnist5k", "train")["image"].astype(np.float32) / 255.0
    real_test = data.load("mnist5k", "test")["image"].astype(np.float32) / 255.0
    report = fid.generative_report(extractor, generated, real_train, real_test)
    report["extractor_checkpoint"] = ckpt
    results.update(report)
    wall["fd_kid"] = time.time() - t
    save()

  if "label_agreement" not in results:
    t = time.time()
    with np.load(npz) as f:
      results.update(label_agreement(args.classifier,
                                     f["image"].astype(np.float32) / 255.0, f["label"]))
    wall["label_agreement"] = time.time() - t
    save()

  if args.iwae_k and "nll_nats" not in results:
    t = time.time()
    results.update(iwae_nll(args.generator, args.iwae_k, args.iwae_examples))
    wall["iwae"] = time.time() - t
    save()
  print(json.dumps(results, indent=2))
  return 0


if __name__ == "__main__":
  import _cli  # pylint: disable=g-import-not-at-top
  sys.exit(_cli.run(main))
