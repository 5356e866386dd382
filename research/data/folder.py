"""The user's own images: `data.name = 'folder:/path/to/root'` (the ImageFolder layout).

  root/<class_name>/*.png|jpg|jpeg|bmp|webp            split here, stratified, seeded
  root/train/<class_name>/..., root/test/<class_name>/...   splits as given

Class names are the folder names (sorted; label i = i-th name). Every image is
decoded with Pillow, converted to RGB or grayscale (`channels` 3 or 1),
resized to `image_size` x `image_size` keeping its aspect ratio ('crop':
shorter side to the size, centre crop; 'pad': longer side to the size, black
borders), and written once as an array_record TFDS dataset (no TensorFlow)
under `<data_dir>/folder_<fingerprint>/`. The fingerprint covers the file list,
sizes and modification times and the options, so a changed folder is rebuilt
and an unchanged one is read back. Beside the dataset: `class_names.json`
and `report.json` (images per class and split, unreadable images skipped with
their paths, non-image files ignored).

Errors name what is wrong: a missing root, a class folder with no readable
image, a test class unknown to train, image_size <= 0.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np

from research.data import builders

PREFIX = "folder:"
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
RESIZE_MODES = ("crop", "pad")
TEST_FRACTION = 0.2


def is_folder(name: str) -> bool:
  return isinstance(name, str) and name.startswith(PREFIX)


def root_of(name: str) -> str:
  root = os.path.abspath(os.path.expanduser(name[len(PREFIX):]))
  if not os.path.isdir(root):
    raise FileNotFoundError(f"data.name={name!r}: no directory {root!r}")
  return root


def _class_files(directory: str) -> tuple[dict[str, list[str]], list[str]]:
  """({class name: sorted image paths}, ignored non-image paths) of one split directory."""
  classes, ignored = {}, []
  for entry in sorted(os.listdir(directory)):
    path = os.path.join(directory, entry)
    if not os.path.isdir(path):
      ignored.append(path)
      continue
    files = []
    for dirpath, _, names in sorted(os.walk(path)):
      for n in sorted(names):
        (files if n.lower().endswith(EXTENSIONS) else ignored).append(os.path.join(dirpath, n))
    classes[entry] = files
  if not classes:
    raise ValueError(f"folder dataset: no class folders in {directory!r} (expected "
                     f"{directory}/<class_name>/*.png|jpg|...)")
  return classes, ignored


def scan(root: str) -> dict:
  """{'classes': names, 'splits': {split: {class: paths}} or {'all': ...}, 'ignored': paths}."""
  if os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "test")):
    train, ig1 = _class_files(os.path.join(root, "train"))
    test, ig2 = _class_files(os.path.join(root, "test"))
    unknown = sorted(set(test) - set(train))
    if unknown:
      raise ValueError(f"folder dataset {root!r}: test classes {unknown} have no train folder")
    return {"classes": sorted(train), "splits": {"train": train, "test": test},
            "ignored": ig1 + ig2}
  classes, ignored = _class_files(root)
  return {"classes": sorted(classes), "splits": {"all": classes}, "ignored": ignored}


def fingerprint(listing: dict, options: dict) -> str:
  h = hashlib.sha1(json.dumps(options, sort_keys=True).encode())
  for split, classes in sorted(listing["splits"].items()):
    for cls, paths in sorted(classes.items()):
      for p in paths:
        st = os.stat(p)
        h.update(f"{split}/{cls}/{os.path.basename(p)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
  return h.hexdigest()[:16]


def decode(path: str, image_size: int, channels: int, resize: str) -> np.ndarray:
  """uint8 [image_size, image_size, channels]; raises OSError/ValueError if unreadable."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path) as im:
    im.load()
    im = im.convert("RGB" if channels == 3 else "L")
  w, h = im.size
  scale = image_size / (min(w, h) if resize == "crop" else max(w, h))
  nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
  im = im.resize((nw, nh), Image.BILINEAR)
  canvas = Image.new(im.mode, (image_size, image_size))
  canvas.paste(im, ((image_size - nw) // 2, (image_size - nh) // 2))  # crop or pad, centred
  out = np.asarray(canvas, np.uint8)
  return out[..., None] if channels == 1 else out


def _decode_all(classes: dict[str, list[str]], names: list[str], options: dict, skipped: list):
  images, labels = [], []
  for label, cls in enumerate(names):
    good = 0
    for path in classes.get(cls, []):
      try:
        images.append(decode(path, options["image_size"], options["channels"],
                             options["resize"]))
      except Exception as e:  # pylint: disable=broad-except  # any decoder failure: skip it
        skipped.append({"path": path, "error": f"{type(e).__name__}: {e}"[:200]})
        continue
      labels.append(label)
      good += 1
    if cls in classes and not good:
      raise ValueError(f"folder dataset: class {cls!r} has no readable image "
                       f"({len(classes[cls])} files)")
  shape = (0, options["image_size"], options["image_size"], options["channels"])
  return (np.stack(images) if images else np.zeros(shape, np.uint8),
          np.asarray(labels, np.int64))


def _builder_class(shape):
  class FolderDataset(builders._InMemoryBuilder, skip_registration=True):  # pylint: disable=protected-access
    """One exported folder; its arrays are decoded by the caller."""
    IMAGE_SHAPE = shape
    arrays = None

    def _arrays(self):
      return self.arrays
  return FolderDataset


def prepare(name: str, data_dir: str, image_size: int, channels: int = 3,
            resize: str = "crop") -> str:
  """Builds the dataset of folder `name` if needed; returns its directory (with the JSON files)."""
  if not isinstance(image_size, int) or image_size <= 0:
    raise ValueError(f"data.image_size={image_size!r}: a folder dataset needs a size > 0 "
                     f"(its images are resized to image_size x image_size)")
  if channels not in (1, 3):
    raise ValueError(f"data.channels={channels!r}: must be 1 (grayscale) or 3 (RGB)")
  if resize not in RESIZE_MODES:
    raise ValueError(f"data.resize={resize!r}: must be one of {RESIZE_MODES}")
  root = root_of(name)
  listing = scan(root)
  options = {"image_size": image_size, "channels": channels, "resize": resize,
             "test_fraction": TEST_FRACTION}
  out = os.path.join(data_dir, f"folder_{fingerprint(listing, options)}")
  if os.path.exists(os.path.join(out, "report.json")):
    return out
  with builders.file_lock(out + ".lock"):  # concurrent runs build it once
    if not os.path.exists(os.path.join(out, "report.json")):
      _build(root, listing, options, out)
  return out


def _build(root: str, listing: dict, options: dict, out: str) -> None:
  """Decodes the listed images and writes the dataset, class_names.json and report.json
  (last: its presence marks the dataset done) into `out`."""
  image_size, channels = options["image_size"], options["channels"]
  if os.path.isdir(out):  # a build that died before its report: start again
    shutil.rmtree(out)
  names, skipped = listing["classes"], []
  if "all" in listing["splits"]:
    images, labels = _decode_all(listing["splits"]["all"], names, options, skipped)
    train, test = builders.stratified_split(labels, TEST_FRACTION)
    splits = {"train": train, "test": test}
  else:
    parts = [_decode_all(listing["splits"][s], names, options, skipped) for s in ("train", "test")]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    n = len(parts[0][1])
    splits = {"train": np.arange(n), "test": np.arange(n, len(labels))}
  cls = _builder_class((image_size, image_size, channels))
  builder = cls(data_dir=out, file_format="array_record")
  builder.arrays = (images, labels, splits)
  builder.download_and_prepare()
  counts = {s: {names[c]: int(np.sum(labels[idx] == c)) for c in range(len(names))}
            for s, idx in splits.items()}
  with open(os.path.join(out, "class_names.json"), "w") as f:
    json.dump(names, f, indent=1)
  with open(os.path.join(out, "report.json") + ".tmp", "w") as f:  # written last: the done mark
    json.dump({"root": root, "options": options, "images": counts,
               "skipped": skipped, "num_skipped": len(skipped),
               "ignored": listing["ignored"][:20], "num_ignored": len(listing["ignored"])},
              f, indent=1)
  os.replace(os.path.join(out, "report.json") + ".tmp", os.path.join(out, "report.json"))
  if skipped or listing["ignored"]:
    first = ", ".join(s["path"] for s in skipped[:3])
    print(f"folder dataset {root}: {len(skipped)} unreadable image(s) skipped"
          f"{' (' + first + ')' if first else ''}, {len(listing['ignored'])} non-image "
          f"file(s) ignored; report: {os.path.join(out, 'report.json')}", flush=True)


def source(name: str, split: str, data_dir: str, image_size: int, channels: int = 3,
           resize: str = "crop"):
  """The TFDS data source of `split` of folder dataset `name` (built on first use)."""
  out = prepare(name, data_dir, image_size, channels, resize)
  cls = _builder_class((image_size, image_size, channels))
  return cls(data_dir=out, file_format="array_record").as_data_source(split=split)


def class_names(name: str, data_dir: str, image_size: int, channels: int = 3,
                resize: str = "crop") -> list[str]:
  with open(os.path.join(prepare(name, data_dir, image_size, channels, resize),
                         "class_names.json")) as f:
    return json.load(f)
