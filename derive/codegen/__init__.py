"""Code generation: a Numba-friendly SymPy printer and the Jinja renderer of modules."""
