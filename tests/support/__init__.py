"""Test support: the real registry, image builder, fault proxy, token server, promtool."""
