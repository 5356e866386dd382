"""One train step taken by hand in a test, as the trainer takes it on one device."""
import jax

from research import parallel


def one_device_step(task):
  """`task.train_step`, jitted, over a device axis of size 1 named as the trainer's.

  Returns fn(state, batch, rng) -> (new state, metrics), each with a leading axis of 1.
  """
  return jax.jit(jax.vmap(task.train_step, in_axes=(None, None, None),
                          axis_name=parallel.AXIS, axis_size=1))
