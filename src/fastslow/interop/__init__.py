"""Interoperability: System 1 as a NIR graph (:mod:`fastslow.interop.nir`, the ``nir`` extra) for
neuromorphic hardware and other SNN libraries, System 2 as ONNX (:mod:`fastslow.interop.onnx`, the
``onnx`` extra); ``fastslow export`` on the command line.

Nothing here is imported eagerly: each format's packages are optional extras."""
