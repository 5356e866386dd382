r"""Per-op-category profile of one EfficientNet-Lite0 train step, Flax vs PyTorch.

Same step as benchmarks/bench_efficientnet.py (forward in training mode,
softmax cross-entropy, backward, SGD with momentum). Both are run in one
process, steps interleaved; then

* Flax: the compiled step is traced with `jax.profiler.trace`. XLA:CPU
  records one event per thunk (an HLO instruction of the optimised module:
  a fusion, a convolution, a copy, ...); each is put in a category from the
  instruction in `compiled.as_text()` (its opcode, convolution window and
  feature groups, and the JAX source path in its metadata, where
  `transpose(jvp(...))` marks the backward pass).
* PyTorch: `torch.profiler` (CPU) self time per aten op, put in the same
  categories from the op name and the weight shape of convolutions.

The table gives milliseconds per step per category: the sum of the op
durations (for XLA, thunks on different threads can overlap, so the sum can
exceed the wall time; the wall time of the traced and of the timed steps is
printed beside it).

  python benchmarks/profile_efficientnet.py --batch 128 --res 64 --out /tmp/effnet_prof

`--reanalyse` re-reads the data saved in `--out` and prints the tables
again without running anything. `--shifted_depthwise` profiles the model
with `shifted_depthwise=True`. `--top N` lists the N most expensive XLA
instructions with their category.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import tempfile
import time



def _bench_efficientnet():
  """benchmarks/bench_efficientnet.py, loaded by path (benchmarks/ is not a package)."""
  from research import config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.load_module(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_efficientnet.py"))

CATEGORIES = (
    "depthwise conv fwd", "depthwise conv input-grad",
    "depthwise conv filter-grad", "1x1 conv fwd", "1x1 conv input-grad",
    "1x1 conv filter-grad", "BN + ReLU6 + residual + dropout, fwd",
    "BN + ReLU6 + residual + dropout, bwd", "transposes / copies",
    "stem conv, head, pooling, loss", "optimizer", "other",
)
# PyTorch's convolution_backward computes both gradients in one op.
TORCH_MERGED = {"depthwise conv input-grad": "depthwise conv filter-grad",
                "1x1 conv input-grad": "1x1 conv filter-grad"}


# ----------------------------------------------------------------- Flax side.

_INSTR = re.compile(r"^\s+(ROOT )?%?([\w.\-]+) = (\S+?)(?:\{[^}]*\})? ([\w\-]+)\(")


def parse_hlo(text):
  """(instructions: name -> dict, computations: name -> [names], roots)."""
  comps, roots, info = {}, {}, {}
  cur = None
  for line in text.splitlines():
    if line and not line.startswith(" ") and line.rstrip().endswith("{"):
      m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) ", line)
      cur = m.group(1) if m else None
      comps[cur] = []
      continue
    m = _INSTR.match(line)
    if m and cur is not None:
      name = m.group(2)
      shape = re.match(r"\w+\[([\d,]*)\]", m.group(3))
      dims = ([int(d) for d in shape.group(1).split(",") if d]
              if shape else [])
      info[name] = {"opcode": m.group(4), "line": line, "dims": dims}
      comps[cur].append(name)
      if m.group(1):
        roots[cur] = name
  return info, comps, roots


def _called(line):
  return re.findall(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)", line)


def _flatten(name, info, comps, seen=None):
  """The instruction and all instructions of the computations it calls."""
  seen = set() if seen is None else seen
  out = [name]
  for comp in _called(info[name]["line"]):
    if comp in seen or comp not in comps:
      continue
    seen.add(comp)
    for n in comps[comp]:
      out.extend(_flatten(n, info, comps, seen))
  return out


def _op_name(line):
  m = re.search(r'op_name="([^"]*)"', line)
  return m.group(1) if m else ""


def _conv_category(ins, batch):
  line, dims = ins["line"], ins["dims"]
  groups = re.search(r"feature_group_count=(\d+)", line)
  depthwise = groups is not None and int(groups.group(1)) > 1
  op = _op_name(line)
  if "stem_conv" in op or "/head/" in op:
    return "stem conv, head, pooling, loss"
  if not op:  # XLA-made (e.g. a filter gradient rewritten as a convolution)
    if len(dims) == 4 and dims[1:3] == [1, 1]:
      return "1x1 conv filter-grad"
    return "stem conv, head, pooling, loss"
  kind = "depthwise conv" if depthwise or "depthwise" in op else "1x1 conv"
  if "transpose(" not in op:
    return kind + " fwd"
  return kind + (" input-grad" if dims[:1] == [batch] else " filter-grad")


def flax_category(name, info, comps, roots, batch):
  """The category of one entry-computation instruction (one thunk)."""
  if name not in info:
    return "other"
  flat = _flatten(name, info, comps)
  for n in flat:
    if info[n]["opcode"] == "convolution":
      return _conv_category(info[n], batch)
  for n in flat:
    if info[n]["opcode"] == "dot":
      op = _op_name(info[n]["line"])
      if "_conv" in op:
        return _conv_category(info[n], batch)
      return "stem conv, head, pooling, loss"
  called = _called(info[name]["line"])
  root = roots.get(called[0], name) if called else name
  if info[name]["opcode"] in ("copy", "transpose") or info[root]["opcode"] in (
      "copy", "transpose"):
    return "transposes / copies"
  names = [_op_name(info[n]["line"]) for n in flat]
  # Fusions with the depthwise conv's own slices/pads/reductions (the
  # shifted-sum kernel gradient, and with shifted_depthwise the forward pass
  # and input gradient too) count as depthwise, also where XLA fused the
  # BatchNorm + ReLU6 that produces their input into them. A fusion with a
  # whole k*k sum (>= 9 slices) is a forward pass or an input gradient; the
  # kernel gradient's fusions each hold one slice or a reduction.
  dw = [n for n, o in zip(flat, names) if "/depthwise_conv/" in o and
        info[n]["opcode"] in ("slice", "reduce", "pad")]
  if dw:
    backward = any("transpose(" in _op_name(info[n]["line"]) for n in dw)
    slices = sum(info[n]["opcode"] == "slice" for n in dw)
    if not backward:
      return "depthwise conv fwd"
    if slices >= 9 and not any(info[n]["opcode"] == "reduce" for n in dw):
      return "depthwise conv input-grad"
    return "depthwise conv filter-grad"
  model = [o for o in names if "jvp(" in o]
  if not model:
    return "optimizer" if any("jit(train_step)/" in o for o in names) else "other"
  rop = _op_name(info[root]["line"]) or model[-1]
  if any(k in rop for k in ("stem_conv", "/head/", "softmax", "reduce_max",
                            "log", "integer_pow")) and "_bn" not in rop:
    return "stem conv, head, pooling, loss"
  backward = "transpose(" in rop
  return "BN + ReLU6 + residual + dropout, " + ("bwd" if backward else "fwd")


def trace_thunks(log_dir):
  """[(thunk name, duration us, run id)] of jit_train_step from a trace."""
  path = glob.glob(os.path.join(log_dir, "plugins/profile/*/"
                                "perfetto_trace.json.gz"))
  with gzip.open(sorted(path)[-1]) as f:
    data = json.load(f)
  events = data["traceEvents"] if isinstance(data, dict) else data
  out, walls = [], []
  for e in events:
    if e.get("ph") != "X":
      continue
    args = e.get("args") or {}
    if args.get("hlo_module", "").startswith("jit_train_step"):
      out.append((args["hlo_op"], e["dur"], args.get("run_id")))
    elif e["name"] == "ThunkExecutor::Execute (wait for completion)":
      walls.append(e["dur"])
  return out, walls


def profile_flax(batch, res, out_dir, repeats, torch_step=None,
                 shifted_depthwise=False):
  import jax  # pylint: disable=g-import-not-at-top
  from research import timing  # pylint: disable=g-import-not-at-top
  bench_efficientnet = _bench_efficientnet()
  _, train_step, state, x, y = bench_efficientnet.flax_train_step(
      batch, res, shifted_depthwise=shifted_depthwise)
  t = time.perf_counter()
  compiled = train_step.lower(state, x, y).compile()
  compile_s = time.perf_counter() - t
  with open(os.path.join(out_dir, "flax_hlo.txt"), "w") as f:
    f.write(compiled.as_text())
  box = [state]

  def step():
    box[0], loss = compiled(box[0], x, y)
    loss.block_until_ready()

  step()
  if torch_step:
    torch_step()
  peers = {"flax": lambda r: step()}
  if torch_step:
    peers["torch"] = lambda r: torch_step()
  times = {k: t.wall for k, t in timing.interleaved(peers, repeats, warmup=0).items()}
  times.setdefault("torch", [])
  log_dir = tempfile.mkdtemp(prefix="effnet_trace_", dir=out_dir)
  with jax.profiler.trace(log_dir, create_perfetto_trace=True):
    t = time.perf_counter()
    step()
    traced_s = time.perf_counter() - t
  thunks, walls = trace_thunks(log_dir)
  return {"compile_s": compile_s, "times": times, "traced_s": traced_s,
          "thunks": thunks, "walls": walls}


# -------------------------------------------------------------- PyTorch side.

def torch_category(name, shapes, phase, batch):
  """Category of one aten op (self time), from its name, shapes and phase."""
  if phase == "optimizer":
    return "optimizer"
  if "conv" in name and "batch_norm" not in name:
    backward = "backward" in name
    weight = (shapes[2] if backward else shapes[1]) if len(shapes) > 2 else []
    if len(weight) != 4 or weight[1] == 3:  # stem: 3 input channels
      return "stem conv, head, pooling, loss"
    kind = "depthwise conv" if weight[1] == 1 else "1x1 conv"
    return kind + (" filter-grad" if backward else " fwd")
  if any(k in name for k in ("copy", "contiguous", "clone", "transpose",
                             "permute")):
    return "transposes / copies"
  if any(k in name for k in ("linear", "addmm", "aten::mm", "aten::t",
                             "softmax", "nll", "mean", "adaptive_avg",
                             "cross_entropy")):
    return "stem conv, head, pooling, loss"
  if phase in ("forward", "backward"):
    return ("BN + ReLU6 + residual + dropout, " +
            ("bwd" if phase == "backward" else "fwd"))
  return "other"


def torch_profile(torch_step):
  from torch import profiler  # pylint: disable=g-import-not-at-top
  with profiler.profile(activities=[profiler.ProfilerActivity.CPU],
                        record_shapes=True) as prof:
    t = time.perf_counter()
    torch_step()
    traced_s = time.perf_counter() - t
  rows = collections.Counter()
  for e in prof.events():
    phase, p = "", e
    while p is not None:
      if p.name in ("forward", "backward", "optimizer"):
        phase = p.name
        break
      p = p.cpu_parent
    if e.name in ("forward", "backward", "optimizer"):
      continue
    shapes = json.dumps([list(s) for s in e.input_shapes])
    rows[(e.name, shapes, phase)] += e.self_cpu_time_total
  return {"rows": [(k[0], json.loads(k[1]), k[2], v)
                   for k, v in rows.items()], "traced_s": traced_s}


# ----------------------------------------------------------------- Analysis.

def analyse(data, top):
  batch = data["batch"]
  info, comps, roots = parse_hlo(data["flax_hlo"])
  fl = data["flax"]
  nruns = max(len({r for _, _, r in fl["thunks"]}), 1)
  fx, per_instr = collections.Counter(), collections.Counter()
  for name, dur, _ in fl["thunks"]:
    fx[flax_category(name, info, comps, roots, batch)] += dur / 1e3 / nruns
    per_instr[name] += dur / 1e3 / nruns
  tc, per_op = collections.Counter(), collections.Counter()
  pt = data.get("torch")
  for name, shapes, phase, self_us in (pt["rows"] if pt else []):
    cat = torch_category(name, shapes, phase, batch)
    tc[cat] += self_us / 1e3
    per_op[(cat, name, json.dumps(shapes[:3]))] += self_us / 1e3
  print(f"## batch {batch} x {data['res']}x{data['res']} "
        f"(load average {data['load'][0]:.1f} -> {data['load'][1]:.1f})\n")
  t_flax = statistics.median(fl["times"]["flax"])
  line = (f"timed steps (median of {len(fl['times']['flax'])}): "
          f"Flax {t_flax * 1e3:.0f} ms")
  if fl["times"]["torch"]:
    t_torch = statistics.median(fl["times"]["torch"])
    line += (f", PyTorch {t_torch * 1e3:.0f} ms; Flax / PyTorch throughput "
             f"{t_torch / t_flax:.2f}")
  print(line)
  print(f"traced step wall: Flax {fl['traced_s'] * 1e3:.0f} ms"
        + (f", PyTorch {pt['traced_s'] * 1e3:.0f} ms" if pt else "")
        + f"; Flax compile {fl['compile_s']:.0f} s\n")
  print("| category | Flax ms | PyTorch ms |")
  print("|---|---|---|")
  for c in CATEGORIES:
    if c in TORCH_MERGED:
      print(f"| {c} | {fx[c]:.0f} | (with filter-grad) |")
    elif c in TORCH_MERGED.values():
      print(f"| {c} | {fx[c]:.0f} | {tc[c]:.0f} (both grads) |")
    else:
      print(f"| {c} | {fx[c]:.0f} | {tc[c]:.0f} |")
  print(f"| **sum of op times** | {sum(fx.values()):.0f} | "
        f"{sum(tc.values()):.0f} |")
  if top:
    print(f"\nTop {top} XLA instructions (ms per step):")
    for name, ms in per_instr.most_common(top):
      print(f"  {ms:8.1f}  {flax_category(name, info, comps, roots, batch):36s}"
            f" {name}  {_op_name(info.get(name, {}).get('line', ''))[15:100]}")
    print(f"\nTop {top} PyTorch ops (self ms per step):")
    for (cat, name, shapes), ms in per_op.most_common(top):
      print(f"  {ms:8.1f}  {cat:36s} {name} {shapes}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--res", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--out", default="/tmp/effnet_profile")
  parser.add_argument("--no_torch", action="store_true")
  parser.add_argument("--reanalyse", action="store_true")
  parser.add_argument("--shifted_depthwise", action="store_true",
                      help="profile the model with shifted_depthwise=True")
  parser.add_argument("--top", type=int, default=0)
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, "profile.json")
  if not args.reanalyse:
    load0 = os.getloadavg()[0]
    torch_step = None
    if not args.no_torch:
      bench_efficientnet = _bench_efficientnet()
      torch_step = bench_efficientnet.torch_step_fn(args.batch, args.res)[0]
    data = {"batch": args.batch, "res": args.res,
            "flax": profile_flax(args.batch, args.res, args.out, args.repeats,
                                 torch_step, args.shifted_depthwise)}
    if torch_step:
      data["torch"] = torch_profile(torch_step)
    data["load"] = [load0, os.getloadavg()[0]]
    with open(os.path.join(args.out, "flax_hlo.txt")) as f:
      data["flax_hlo"] = f.read()
    with open(path, "w") as f:
      json.dump(data, f)
  with open(path) as f:
    data = json.load(f)
  analyse(data, args.top)


if __name__ == "__main__":
  main()
