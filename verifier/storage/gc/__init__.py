"""Models of distribution's ``garbage-collect``: one module per line, and the join.

`snapshot` reads a registry once, `manifests` parses manifests the way distribution does,
`plan` holds what both lines share, `v28` and `v3` are the two mark phases, `join` holds a plan
against every tag. `verifier.storage.gc_preview` puts them together.
"""
