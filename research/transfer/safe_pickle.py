"""A pickle reader that builds plain data and calls only what it is given.

`pickle.Unpickler` with a restricted `find_class` still executes every other
opcode on whatever the allowed globals resolve to: BUILD writes into an
object's `__dict__` (even a frozen dataclass's) or sets attributes,
SETITEM / APPEND call `__setitem__` / `append`, so a pickle can poison an
object that outlives the load. This reader is a separate pickle machine with
an allow-list of opcodes:

  * plain data (None, bools, ints, floats, str, bytes, tuples, lists, dicts,
    sets) is built from scratch by the reader;
  * SETITEM(S) / APPEND(S) / ADDITEMS / BUILD act only on a list, dict or set
    that this same load created (BUILD's state, e.g. a state dict's
    `_metadata`, is checked and dropped, never applied);
  * GLOBAL / STACK_GLOBAL are answered by the caller's `find_global`, which
    must return a NEW stand-in per call; REDUCE calls only a `Function`
    stand-in; persistent ids go to the caller's `persistent_load`;
  * INST, OBJ, NEWOBJ(_EX), EXT1/2/4 and out-of-band buffers are refused;
  * containers nest at most `MAX_DEPTH` levels, and no read goes past
    `max_read` bytes, so a hostile file cannot recurse or allocate its way
    past the reader.
"""
from __future__ import annotations

import codecs
import pickle
import struct
from typing import Any, BinaryIO, Callable

MAX_DEPTH = 100  # container nesting; a state dict needs < 10
HIGHEST_PROTOCOL = 5


class CheckpointError(ValueError):
  """The checkpoint is malformed, truncated, too large or unsafe.

  Attributes:
    reason: what is wrong.
    path: the file, once known.
    member: the part of the file (zip member, legacy section), once known.
  """

  def __init__(self, reason: str, path: str | None = None,
               member: str | None = None):
    self.reason, self.path, self.member = reason, path, member
    where = [f"file {path}"] if path else []
    where += [f"member {member!r}"] if member else []
    prefix = ", ".join(where) + ": " if where else ""
    super().__init__(f"torch_checkpoint: {prefix}{reason}")

  def at(self, path: str, member: str) -> CheckpointError:
    """The same error, naming the file and member (kept if already named)."""
    return type(self)(self.reason, self.path or path, self.member or member)


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
  """The checkpoint asks for something a state dict never needs."""


class Function:
  """A stand-in a pickle may name (GLOBAL) and call (REDUCE).

  `fn` must return a new object per call; `makes_container` says the result
  is a list or dict that later SETITEM(S) / APPEND(S) / BUILD may fill.
  """
  __slots__ = ("name", "fn", "makes_container")

  def __init__(self, name: str, fn: Callable[..., Any],
               makes_container: bool = False):
    self.name, self.fn, self.makes_container = name, fn, makes_container


def _refuse_global(module: str, name: str):
  raise UnsafeCheckpointError(f"refusing to load global '{module}.{name}': "
                              "no globals are allowed here")


def _refuse_persistent(pid):
  raise UnsafeCheckpointError(
      f"refusing a persistent id of type {type(pid).__name__}")


_REFUSED = {
    b"i": "INST", b"o": "OBJ", b"\x81": "NEWOBJ", b"\x92": "NEWOBJ_EX",
    b"\x82": "EXT1", b"\x83": "EXT2", b"\x84": "EXT4",
    b"\x97": "NEXT_BUFFER", b"\x98": "READONLY_BUFFER",
}
_MUTABLE = (dict, list, set)


class SafeUnpickler:
  """Reads one pickle from `file` (stops right after its STOP opcode).

  Args:
    file: binary file positioned at the pickle.
    max_read: the most bytes the pickle may occupy (e.g. the bytes left in
      the file); a length field past it is refused before anything is read.
    find_global: (module, name) -> a new stand-in, or raises; None refuses
      all globals.
    persistent_load: pid -> object, or raises; None refuses persistent ids.
  """

  def __init__(self, file: BinaryIO, max_read: int,
               find_global: Callable[[str, str], Any] | None = None,
               persistent_load: Callable[[Any], Any] | None = None):
    self._file, self._left, self._pos = file, max_read, 0
    self._find_global = find_global or _refuse_global
    self._persistent_load = persistent_load or _refuse_persistent
    self._stack: list[Any] = []
    self._marks: list[list[Any]] = []
    self._memo: dict[int, Any] = {}
    self._made: list[Any] = []       # every container built: keeps ids valid
    self._fresh: set[int] = set()    # ids of mutable containers built here
    self._depth: dict[int, int] = {}  # id -> nesting depth of containers

  # Reading.
  def _read(self, n: int, what: str) -> bytes:
    if n < 0 or n > self._left:
      raise CheckpointError(
          f"truncated: {what} at byte {self._pos} needs {n} bytes, "
          f"{self._left} left")
    data = self._file.read(n)
    if len(data) != n:
      raise CheckpointError(f"truncated: the data ends inside {what} at byte "
                            f"{self._pos}")
    self._left -= n
    self._pos += n
    return data

  def _unpack(self, fmt: str, what: str):
    return struct.unpack(fmt, self._read(struct.calcsize(fmt), what))[0]

  def _readline(self, what: str) -> bytes:
    line = self._file.readline(self._left)
    self._left -= len(line)
    self._pos += len(line)
    if not line.endswith(b"\n"):
      raise CheckpointError(f"truncated: {what} has no end of line")
    return line[:-1]

  # Containers.
  def _new(self, obj, children=(), mutable=False):
    depth = 1 + max((self._depth.get(id(c), 0) for c in children), default=0)
    self._check_depth(depth)
    self._made.append(obj)
    self._depth[id(obj)] = depth
    if mutable:
      self._fresh.add(id(obj))
    return obj

  def _check_depth(self, depth: int):
    if depth > MAX_DEPTH:
      raise CheckpointError(f"containers nest deeper than {MAX_DEPTH} levels "
                            f"(at byte {self._pos})")

  def _target(self, op: str, kind: type):
    """The container under the stack top that `op` writes into."""
    if not self._stack:
      raise CheckpointError(f"{op} at byte {self._pos} on an empty stack")
    obj = self._stack[-1]
    if id(obj) not in self._fresh or not isinstance(obj, kind):
      raise UnsafeCheckpointError(
          f"refusing {op} at byte {self._pos} on a {type(obj).__name__}: "
          f"only a {kind.__name__} built by this pickle may be filled")
    return obj

  def _grow(self, obj, children):
    depth = 1 + max((self._depth.get(id(c), 0) for c in children), default=0)
    self._check_depth(depth)
    self._depth[id(obj)] = max(self._depth[id(obj)], depth)

  def _pop(self, n: int | None = None):
    """The stack top, or (n given) a list of the top n items, in order."""
    if len(self._stack) < (n or 1):
      raise CheckpointError(f"stack underflow at byte {self._pos}")
    if n is None:
      return self._stack.pop()
    items = self._stack[len(self._stack) - n:]
    del self._stack[len(self._stack) - n:]
    return items

  def _pop_mark(self) -> list[Any]:
    if not self._marks:
      raise CheckpointError(f"no MARK before byte {self._pos}")
    items, self._stack = self._stack, self._marks.pop()
    return items

  def _fill(self, op: str, items: list[Any]):
    """APPEND(S), ADDITEMS, SETITEM(S), DICT: `items` into the container."""
    kind = {"APPEND": list, "APPENDS": list, "ADDITEMS": set}.get(op, dict)
    target = self._target(op, kind)
    self._grow(target, items)
    if kind is list:
      target.extend(items)
    elif kind is set:
      target.update(items)
    elif len(items) % 2:
      raise CheckpointError(f"odd number of dict items at byte {self._pos}")
    else:
      for key, value in zip(items[::2], items[1::2]):
        target[key] = value

  def _get(self, idx: int):
    if idx not in self._memo:
      raise CheckpointError(f"memo key {idx} is missing (byte {self._pos})")
    self._stack.append(self._memo[idx])

  def _put(self, idx: int):
    if not self._stack or idx < 0:
      raise CheckpointError(f"bad memo PUT {idx} at byte {self._pos}")
    self._memo[idx] = self._stack[-1]

  def _global(self, module, name):
    if not isinstance(module, str) or not isinstance(name, str):
      raise CheckpointError(f"global name must be two str, got "
                            f"{type(module).__name__}/{type(name).__name__}")
    self._stack.append(self._find_global(module, name))

  def _reduce(self):
    args, fn = self._pop(), self._pop()
    if type(fn) is not Function:  # pylint: disable=unidiomatic-typecheck
      raise UnsafeCheckpointError(
          f"refusing REDUCE at byte {self._pos}: {type(fn).__name__} is not "
          "an allowed function")
    if type(args) is not tuple:  # pylint: disable=unidiomatic-typecheck
      raise CheckpointError(f"{fn.name} arguments must be a tuple, got "
                            f"{type(args).__name__}")
    try:
      out = fn.fn(*args)
    except TypeError as e:
      raise CheckpointError(f"bad arguments to {fn.name}: {e}") from None
    if fn.makes_container:
      self._new(out, mutable=True)
    self._stack.append(out)

  def _build(self):
    state = self._pop()
    self._target("BUILD", dict)
    parts = state if type(state) is tuple and len(state) == 2 else (state,)
    for part in parts:
      if part is not None and not (isinstance(part, dict) and
                                   all(isinstance(k, str) for k in part)):
        raise UnsafeCheckpointError(
            f"refusing BUILD at byte {self._pos}: state must be a dict of "
            f"str keys, got {type(part).__name__}")
    # The state (a state dict's `_metadata`) is checked, then dropped.

  # The machine.
  def load(self) -> Any:
    """Runs the pickle to its STOP; returns the object it built."""
    while True:
      start = self._pos
      op = self._read(1, "an opcode")
      if op in _REFUSED:
        raise UnsafeCheckpointError(
            f"refusing pickle opcode {_REFUSED[op]} at byte {start}: it "
            "builds arbitrary objects")
      handler = self._DISPATCH.get(op)
      if handler is None:
        raise CheckpointError(f"unknown pickle opcode {op!r} at byte {start}")
      if op == b".":
        value = self._pop()
        if self._stack or self._marks:
          raise CheckpointError(f"pickle stops with {len(self._stack)} extra stack "
                                f"items and {len(self._marks)} open MARKs")
        return value
      handler(self)

  def _op_text(self, kind: str):
    line = self._readline(kind)
    if kind == "INT" and line in (b"00", b"01"):
      return line == b"01"
    if kind == "LONG":
      return int(line.rstrip(b"L"))
    return int(line) if kind == "INT" else float(line)

  def _op_string(self):
    line = self._readline("STRING").strip()
    if len(line) < 2 or line[:1] != line[-1:] or line[:1] not in b"'\"":
      raise CheckpointError(f"STRING is not quoted at byte {self._pos}")
    return codecs.escape_decode(line[1:-1])[0].decode("utf-8")

  def _op_proto(self):
    proto = self._read(1, "PROTO")[0]
    if proto > HIGHEST_PROTOCOL:
      raise CheckpointError(f"unsupported pickle protocol {proto}")

  def _bytes(self, fmt: str, what: str) -> bytes:
    n = self._unpack(fmt, what) if fmt != "B" else self._read(1, what)[0]
    return self._read(n, what)

  def _persid(self, pid):
    self._stack.append(self._persistent_load(pid))

  def _dup(self):
    self._stack.append(self._stack[-1] if self._stack else self._pop())

  def _mark(self):
    self._marks.append(self._stack)
    self._stack = []

  def _tuple(self, items):
    self._stack.append(self._new(tuple(items), items))

  def _list(self):
    items = self._pop_mark()
    self._stack.append(self._new(items, items, mutable=True))

  def _dict(self):
    items = self._pop_mark()
    self._stack.append(self._new({}, mutable=True))
    self._fill("DICT", items)

  def _frozenset(self):
    items = self._pop_mark()
    self._stack.append(self._new(frozenset(items), items))

  def _stack_global(self):
    module, name = self._pop(2)
    self._global(module, name)

  def _push(self, value):
    self._stack.append(value)

  def _str(self, fmt: str, what: str) -> str:
    return self._bytes(fmt, what).decode("utf-8", "surrogatepass")

  def _long(self, fmt: str, what: str) -> int:
    return int.from_bytes(self._bytes(fmt, what), "little", signed=True)

  _DISPATCH: dict[bytes, Callable[[SafeUnpickler], None]] = {
      b".": lambda s: None,  # STOP, handled in load()
      b"\x80": _op_proto,
      b"\x95": lambda s: s._unpack("<Q", "FRAME"),  # frames need no action
      b"(": _mark,
      b"0": lambda s: s._pop(),
      b"1": lambda s: s._pop_mark(),
      b"2": _dup,
      b"N": lambda s: s._push(None),
      b"\x88": lambda s: s._push(True),
      b"\x89": lambda s: s._push(False),
      b"I": lambda s: s._push(s._op_text("INT")),
      b"L": lambda s: s._push(s._op_text("LONG")),
      b"F": lambda s: s._push(s._op_text("FLOAT")),
      b"J": lambda s: s._push(s._unpack("<i", "BININT")),
      b"K": lambda s: s._push(s._read(1, "BININT1")[0]),
      b"M": lambda s: s._push(s._unpack("<H", "BININT2")),
      b"\x8a": lambda s: s._push(s._long("B", "LONG1")),
      b"\x8b": lambda s: s._push(s._long("<i", "LONG4")),
      b"G": lambda s: s._push(s._unpack(">d", "BINFLOAT")),
      b"S": lambda s: s._push(s._op_string()),
      b"T": lambda s: s._push(s._str("<i", "BINSTRING")),
      b"U": lambda s: s._push(s._str("B", "SHORT_BINSTRING")),
      b"V": lambda s: s._push(
          s._readline("UNICODE").decode("raw-unicode-escape")),
      b"X": lambda s: s._push(s._str("<I", "BINUNICODE")),
      b"\x8c": lambda s: s._push(s._str("B", "SHORT_BINUNICODE")),
      b"\x8d": lambda s: s._push(s._str("<Q", "BINUNICODE8")),
      b"B": lambda s: s._push(s._bytes("<I", "BINBYTES")),
      b"C": lambda s: s._push(s._bytes("B", "SHORT_BINBYTES")),
      b"\x8e": lambda s: s._push(s._bytes("<Q", "BINBYTES8")),
      b"\x96": lambda s: s._push(bytearray(s._bytes("<Q", "BYTEARRAY8"))),
      b")": lambda s: s._tuple([]),
      b"t": lambda s: s._tuple(s._pop_mark()),
      b"\x85": lambda s: s._tuple([s._pop()]),
      b"\x86": lambda s: s._tuple(s._pop(2)),
      b"\x87": lambda s: s._tuple(s._pop(3)),
      b"]": lambda s: s._push(s._new([], mutable=True)),
      b"l": _list,
      b"}": lambda s: s._push(s._new({}, mutable=True)),
      b"d": _dict,
      b"\x8f": lambda s: s._push(s._new(set(), mutable=True)),
      b"\x91": _frozenset,
      b"a": lambda s: s._fill("APPEND", s._pop(1)),
      b"e": lambda s: s._fill("APPENDS", s._pop_mark()),
      b"s": lambda s: s._fill("SETITEM", s._pop(2)),
      b"u": lambda s: s._fill("SETITEMS", s._pop_mark()),
      b"\x90": lambda s: s._fill("ADDITEMS", s._pop_mark()),
      b"b": _build,
      b"R": _reduce,
      b"c": lambda s: s._global(s._readline("GLOBAL").decode("utf-8"),
                                s._readline("GLOBAL").decode("utf-8")),
      b"\x93": _stack_global,
      b"P": lambda s: s._persid(s._readline("PERSID").decode("ascii")),
      b"Q": lambda s: s._persid(s._pop()),
      b"g": lambda s: s._get(int(s._readline("GET"))),
      b"h": lambda s: s._get(s._read(1, "BINGET")[0]),
      b"j": lambda s: s._get(s._unpack("<I", "LONG_BINGET")),
      b"p": lambda s: s._put(int(s._readline("PUT"))),
      b"q": lambda s: s._put(s._read(1, "BINPUT")[0]),
      b"r": lambda s: s._put(s._unpack("<I", "LONG_BINPUT")),
      b"\x94": lambda s: s._put(len(s._memo)),
  }
