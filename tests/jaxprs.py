"""Walking jaxprs in tests that check which primitives a function lowers to."""


def equations(jaxpr):
  """Every equation of `jaxpr`, including those inside called sub-jaxprs."""
  for e in jaxpr.eqns:
    yield e
    for v in e.params.values():
      sub = getattr(v, 'jaxpr', v)
      if hasattr(sub, 'eqns'):
        yield from equations(sub)
