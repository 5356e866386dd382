"""Vets a downloaded PyTorch checkpoint (.pth / .pt) before it is used.

  python scripts/audit_weights.py FILE [--max_bytes BYTES] [--list]

Reads FILE with research.transfer.torch_checkpoint, the torch-free reader that
research/transfer uses for pretrained weights: its own pickle machine resolves
only the globals a state dict needs, to local stand-ins, so nothing in the file
is imported, called or executed (torch is not imported either).

Exit 0: loadable; prints the tensor count, the total number of parameters
(elements), the bytes and the dtypes (--list: every tensor's name, shape, dtype).
Exit 1: not loadable; prints why, as the reader says it: a global or persistent
id that would run code (UnsafeCheckpointError), a truncated or malformed file,
or a size over --max_bytes (CheckpointError naming the file and the member).
"""
from __future__ import annotations

import argparse
import collections
import sys

import numpy as np


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("file")
  parser.add_argument("--max_bytes", type=int, default=None,
                      help="most bytes read (default the reader's, 4 GiB)")
  parser.add_argument("--list", action="store_true", help="also list every tensor")
  args = parser.parse_args(argv)
  from research.transfer import torch_checkpoint as tc  # pylint: disable=g-import-not-at-top
  kwargs = {} if args.max_bytes is None else {"max_bytes": args.max_bytes}
  try:
    arrays = tc.load_state_dict(args.file, **kwargs)
  except (tc.CheckpointError, OSError) as e:  # UnsafeCheckpointError is a CheckpointError
    print(f"NOT LOADABLE: {args.file}: {type(e).__name__}: {e}")
    return 1
  dtypes = collections.Counter(str(np.asarray(a).dtype) for a in arrays.values())
  total = sum(int(np.asarray(a).size) for a in arrays.values())
  nbytes = sum(int(np.asarray(a).nbytes) for a in arrays.values())
  print(f"LOADABLE: {args.file}: {len(arrays)} tensors, {total:,} parameters, "
        f"{nbytes:,} bytes; dtypes {dict(sorted(dtypes.items()))}; nothing was executed")
  if args.list:
    for name, a in arrays.items():
      print(f"  {name}  {tuple(np.shape(a))}  {np.asarray(a).dtype}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
