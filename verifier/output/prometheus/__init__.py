"""Prometheus metrics of a run, in one place: what the series are, where they go, who serves them.

- `metrics`: the series built from a `Report` (and `--format prometheus`);
- `destinations`: `--textfile` (node_exporter textfile collector) and `--pushgateway`;
- `exporter`: `regverify serve`, the long-running HTTP exporter.

Nothing is re-exported here: importing this package must not pull in the exporter (an HTTP
server), which only `regverify serve` needs.
"""
