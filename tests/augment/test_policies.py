"""Pipelines, policies, spec parsing, mixing, erasing and DiffAugment."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import augment as A
from tests.augment import _photos

BATCH = np.stack([_photos.to_float(_photos.astronaut(step=16)),
                  _photos.to_float(_photos.chelsea(step=8))[:32, :32]] * 2)
SPEC = 'flip_lr|affine(rotate=15)|random_resized_crop|color_jitter(0.4,0.4,0.4,0.1)'


def test_pipeline_traces_once_and_is_deterministic():
  fn = A.build(SPEC)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def augment(key, images):
    return fn(key, images)

  outs = [augment(jax.random.key(i), BATCH) for i in range(4)]
  again = augment(jax.random.key(0), BATCH)
  np.testing.assert_array_equal(outs[0], again)
  assert not np.allclose(outs[0], outs[1])
  assert not np.allclose(outs[0][0], outs[0][2])  # per-image draws
  for o in outs:
    assert o.shape == BATCH.shape and o.dtype == jnp.float32
    assert float(o.min()) >= 0 and float(o.max()) <= 1


def test_uint8_input_equals_float_input():
  fn = jax.jit(A.build('flip_lr|rotate(30)'))
  u8 = np.round(BATCH * 255).astype(np.uint8)
  np.testing.assert_allclose(fn(jax.random.key(1), u8),
                             fn(jax.random.key(1), u8 / np.float32(255)),
                             atol=1e-5)


def test_identity_specs():
  for spec in (None, '', []):
    np.testing.assert_array_equal(A.build(spec)(jax.random.key(0), BATCH),
                                  BATCH)


def test_fused_warp_equals_sequential_when_exact():
  # Flips and 90-degree turns are exact, so one fused warp must equal
  # applying them one after another with numpy.
  op = A.compose(A.make_op('rotate', (90, 90)), A.make_op('flip_lr', p=1.0),
                 A.make_op('flip_ud', p=1.0))
  out = np.asarray(op(jax.random.key(0), BATCH[0]))
  np.testing.assert_array_equal(out, np.rot90(BATCH[0], 1)[::-1, ::-1])


def test_random_apply_and_one_of():
  img = BATCH[0]
  inv = A.make_op('invert')
  never = A.random_apply(inv, 0.0)
  always = A.random_apply(inv, 1.0)
  np.testing.assert_array_equal(never(jax.random.key(0), img), img)
  np.testing.assert_allclose(always(jax.random.key(0), img), 1 - img)
  half = jax.vmap(A.random_apply(inv, 0.5))(
      jax.random.split(jax.random.key(0), 64), jnp.broadcast_to(img, (64,) +
                                                                img.shape))
  n_inv = sum(np.allclose(h, 1 - img) for h in np.asarray(half))
  assert 16 < n_inv < 48
  pick = A.one_of([inv, A.make_op('identity')], weights=[1, 0])
  np.testing.assert_allclose(pick(jax.random.key(3), img), 1 - img)


@pytest.mark.parametrize('spec', [
    pytest.param('rand_augment(2, 9)', marks=pytest.mark.slow),
    'trivial_augment_wide'])
def test_auto_augment_policies(spec):
  fn = jax.jit(A.build(spec))
  a, b = fn(jax.random.key(0), BATCH), fn(jax.random.key(0), BATCH)
  np.testing.assert_array_equal(a, b)
  c = fn(jax.random.key(1), BATCH)
  assert a.shape == BATCH.shape and not np.array_equal(a, c)
  assert float(a.min()) >= 0 and float(a.max()) <= 1


def test_spec_errors_name_the_op_and_value():
  with pytest.raises(ValueError, match=r"unknown op 'flip_lrr'; valid ops: "
                     r'affine, autocontrast, .*flip_lr'):
    A.build('flip_lrr|rotate')
  with pytest.raises(ValueError, match=r'augment.affine: rotate must be in '
                     r'\[0.0, 180.0\], got 270'):
    A.build('affine(rotate=270)')
  with pytest.raises(ValueError, match=r'bad arguments for rotate: .*'
                     r"parameters are \['degrees'"):
    A.build('rotate(angle=3)')
  with pytest.raises(ValueError, match=r'augment.random_apply: p must be in '
                     r'\[0.0, 1.0\], got 1.5'):
    A.build('invert(p=1.5)')
  with pytest.raises(ValueError, match='cannot parse op'):
    A.build('rotate(15')
  with pytest.raises(ValueError, match=r'rank 4 \[N, H, W, C\]'):
    A.build('invert')(jax.random.key(0), BATCH[0])
  with pytest.raises(TypeError, match='float32 in \\[0, 1\\] or uint8, got '
                     'dtype int32'):
    A.build('invert')(jax.random.key(0), BATCH.astype(np.int32))


def test_list_spec_and_pmap():
  fn = A.build(['flip_lr', ('cutout', {'size': 0.25}), A.make_op('invert')])
  n = jax.local_device_count()
  x = jnp.broadcast_to(BATCH[:1], (n, 2) + BATCH.shape[1:])
  out = jax.pmap(fn)(jax.random.split(jax.random.key(0), n), x)
  assert out.shape == x.shape


def test_cutout_erases_one_square():
  img = BATCH[0]
  out = np.asarray(A.random_cutout(jax.random.key(5), img, size=8,
                                   fill=0.5))
  changed = np.any(out != img, -1)
  ys, xs = np.nonzero(changed)
  box = np.zeros_like(changed)
  box[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
  np.testing.assert_array_equal(changed, box)  # one axis-aligned box
  assert np.ptp(ys) + 1 <= 8 and np.ptp(xs) + 1 <= 8
  np.testing.assert_allclose(out[changed], 0.5)


def test_random_erasing_area_in_range():
  img = BATCH[0]
  for i in range(8):
    out = np.asarray(A.random_erasing(jax.random.key(i), img))
    frac = np.any(out != img, -1).mean()
    assert frac == 0 or 0.02 * 0.8 <= frac <= 0.33 * 1.2


@pytest.mark.parametrize('mode', ['mixup', 'cutmix'])
def test_mix_labels_match_pixels(mode):
  n = 6
  values = np.linspace(0.1, 0.9, n, dtype=np.float32)
  images = np.broadcast_to(values[:, None, None, None], (n, 16, 16, 3))
  labels = np.eye(n, dtype=np.float32)  # example i has class i
  out, mixed = jax.jit(A.mix, static_argnums=(3, 4))(
      jax.random.key(0), jnp.asarray(images), labels, mode, 1.0)
  out, mixed = np.asarray(out), np.asarray(mixed)
  np.testing.assert_allclose(mixed.sum(1), 1.0, atol=1e-6)
  # Mean pixel value = label-weighted mean of the source values.
  np.testing.assert_allclose(out.mean((1, 2, 3)), mixed @ values, atol=1e-5)
  assert np.count_nonzero(mixed > 1e-6, axis=1).max() <= 2


def test_mix_none_and_errors():
  x, y = BATCH, np.eye(4, dtype=np.float32)
  ox, oy = A.mix(jax.random.key(0), x, y, 'none', 1.0)
  np.testing.assert_array_equal(ox, x)
  with pytest.raises(ValueError, match=r"mode must be one of \['mixup', "
                     r"'cutmix', 'none'\], got 'mixx'"):
    A.mix(jax.random.key(0), x, y, 'mixx', 1.0)
  with pytest.raises(ValueError, match=r'alpha must be in \(0.0, inf\]'):
    A.mix(jax.random.key(0), x, y, 'mixup', 0.0)


def test_diff_augment_translation_and_gradients():
  x = jnp.asarray(BATCH)
  out = np.asarray(jax.jit(lambda k, im: A.diff_augment(k, im, 'translation'))(
      jax.random.key(0), x))
  padded = np.pad(BATCH, ((0, 0), (4, 4), (4, 4), (0, 0)))
  for i in range(4):
    assert any(np.array_equal(out[i], padded[i, dy:dy + 32, dx:dx + 32])
               for dy in range(9) for dx in range(9))
  g = jax.jit(jax.grad(lambda im: A.diff_augment(jax.random.key(1), im,
                                                 'cutout').sum()))(x)
  assert set(np.unique(np.asarray(g))) == {0.0, 1.0}
  g = jax.jit(jax.grad(lambda im: A.diff_augment(jax.random.key(1),
                                                 im).sum()))(x)
  assert np.all(np.isfinite(g)) and np.abs(g).sum() > 0
  with pytest.raises(ValueError, match="unknown policy 'colour'"):
    A.diff_augment(jax.random.key(0), x, 'colour')


@pytest.mark.parametrize('spec,uint8', [
    ('rotate(20)|color_jitter(0.4, 0.4, 0.4, 0.1)', False),
    ('rotate(20, fill=0.6)|color_jitter(0.4, 0.4, 0.4, 0.1)', True),  # 153/255
    ('rotate(20, border="reflect")|color_jitter(0.0, 0.4, 0.4)', True),
])
def test_fused_color_pipeline_equals_per_image_ops(spec, uint8):
  # build() stores the warp once (inside a lax.cond), applies colour jitter's
  # brightness inside the warp and the rest as one batched pass; the result
  # must equal the per-image ops applied one after another.
  x = np.concatenate([BATCH, BATCH[:, ::-1]])[:, ::2, ::2]  # 8 of 16x16
  if uint8:
    x = (np.round(x * 255) / 255).astype(np.float32)
    xin = np.round(x * 255).astype(np.uint8)
  else:
    xin = x
  out = np.asarray(jax.jit(A.build(spec))(jax.random.key(4), xin))
  rot, jitter = A.parse(spec)
  k_rot, k_jit = jax.random.split(jax.random.key(4))
  ref = jax.jit(jax.vmap(lambda kr, kj, im: jitter(kj, rot(kr, im))))(
      jax.random.split(k_rot, 8), jax.random.split(k_jit, 8), x)
  np.testing.assert_allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize('n,k', [(28, 14), (30, 4), (5, 14)])
def test_batch_slices_one_op_per_image_and_shares(n, k):
  # Op j adds 10 * j + 1, so the output names exactly one op per image
  # (no op would leave 0; two ops would give a sum that is no 10 * j + 1).
  images = jnp.asarray(np.random.default_rng(0).random((n, 4, 4, 3),
                                                        np.float32))
  ops = [lambda key, im, j=j: im + (10.0 * j + 1) for j in range(k)]
  q = -(-n // k)  # documented: each op owns ceil(n / k) slots
  apply = jax.jit(lambda key: A.batch_slices(key, images, ops) - images)
  counts = []
  for seed in range(40):
    key = jax.random.key(seed)
    delta = np.asarray(apply(key))
    assert np.allclose(delta, delta[:, :1, :1, :1], atol=1e-4)
    op = (delta[:, 0, 0, 0] - 1) / 10
    np.testing.assert_allclose(op, np.round(op), atol=1e-4)
    op = np.round(op).astype(int)
    assert op.min() >= 0 and op.max() < k
    np.testing.assert_array_equal(op, A.batch_slice_ops(key, n, k))
    c = np.bincount(op, minlength=k)
    assert c.sum() == n and c.max() <= q and c.min() >= q - (k * q - n)
    counts.append(c)
  if n % k == 0:
    assert np.all(np.array(counts) == n // k)
  # Each op has probability 1 / k per image.
  share = np.array(counts).sum(0) / (40 * n)
  assert np.abs(share - 1 / k).max() < 4 * np.sqrt((1 / k) / (40 * n))


def test_sampling_must_be_known():
  with pytest.raises(ValueError, match=r"augment.rand_augment: sampling must "
                     r"be one of \['per_image', 'batch_slices'\], got 'x'"):
    A.build('rand_augment(sampling="x")')


@pytest.mark.slow  # compiles the 14 ops separately (~15-30 s)
def test_auto_augment_batch_slices_pipeline():
  x = np.concatenate([BATCH[:, ::4, ::4]] * 4)  # 16 images of 8x8
  fn = jax.jit(A.build('trivial_augment_wide(sampling="batch_slices")'))
  a, b = fn(jax.random.key(0), x), fn(jax.random.key(0), x)
  np.testing.assert_array_equal(a, b)
  assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
  assert not np.array_equal(a, fn(jax.random.key(1), x))
