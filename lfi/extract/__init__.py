"""Extraction: teachers turn images into interaction maps (paper Eq. 10-12) written once to a store.

Modules: `teacher` (interface, registry, Eq. 11 + empty policy), `oracle` and `vit_teacher` (offline
teachers), `vlm` (LLaVA-family teacher), `run` (extraction loop, `run_extraction`, writing to an
`lfi.store`). The command line is
`lfi.cli.extract`. Nothing is imported here so that each teacher's dependencies load only when it is used.
"""
