"""Compiled kernels.  One module per cell holding forward and backward together.

Kernels never validate their input and never raise: everything they receive was checked
by :mod:`fastrnn._validate` at the Python boundary.
"""
