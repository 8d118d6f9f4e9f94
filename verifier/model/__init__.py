"""Pure vocabulary shared by both modes: references, manifests, findings."""
