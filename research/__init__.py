"""Data completion for scarce labelled image data, on one JAX trainer."""
