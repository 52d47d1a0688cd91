"""Interoperability: System 1 as a NIR graph (:mod:`fastslow.interop.nir`, the ``nir`` extra) for
neuromorphic hardware and other SNN libraries; ``fastslow export`` on the command line.

Nothing here is imported eagerly: each format's packages are optional extras."""
