"""Measure the fleet (`brainall-ops survey`) and derive its roles from the numbers (`brainall-ops roles`).

- `facts.py`: one pyinfra fact per probe; every probe is bounded on the host (`timeout`) and again
  by the survey over SSH, so a probe that hangs or a host that stops answering is cut and reported.
- `parse.py`: the probes' output to numbers (pure, unit-tested on real command output).
- `runner.py`: drives pyinfra's API, in parallel on every host, one probe at a time per host.
- `measurements.py`: the measurements file (YAML, strict schema, timestamped).
- `roles.py`: the role proposal from measurements and the role map (pure; reuses planning's placement).
- `rolemap_edit.py`: `roles --write`: a targeted edit of the role map's `measured:` blocks.
- `display.py`: rich progress and summary tables; `cli.py`: the click commands.

Units throughout: GB are GiB (2^30 bytes, as `free -g` and `df -h` print them, which is how the
hand benchmark was taken); disk throughput GB/s is decimal (10^9 bytes/s, as `dd` prints it);
latency in milliseconds.
"""
