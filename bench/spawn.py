"""Start one program, time it and reap it; for bench/measure.py's ``run_process``.

    python3 -I -S bench/spawn.py RESULT ARGV...

ARGV runs with this process's standard streams, working directory and environment.
RESULT gets one JSON object: ``wall`` (seconds from just before the spawn until the reap),
``maxrss_kb``, ``cpu`` (user + system seconds) and ``status`` (``os.wait4``'s), or
``error`` when ARGV cannot be started.

Why a process of its own: on ``exec`` Linux records the peak RSS of the process image it
replaces in the new program's ``ru_maxrss``. A child that the harness starts (vfork, then
exec) therefore reports the harness's own peak whenever that is larger, tens of MiB by the
fleet cases, whatever the tool used. This launcher stays small (no site, four standard
modules), so its children report their own peak.
"""

import json
import os
import sys
import time


def main() -> int:
    result, argv = sys.argv[1], sys.argv[2:]
    t0 = time.perf_counter()
    try:
        pid = os.posix_spawnp(argv[0], argv, os.environ)
    except OSError as error:
        record: dict[str, object] = {"error": f"{type(error).__name__}: {error}"}
    else:
        _, status, usage = os.wait4(pid, 0)
        record = {"wall": time.perf_counter() - t0, "maxrss_kb": usage.ru_maxrss,
                  "cpu": usage.ru_utime + usage.ru_stime, "status": status}
    with open(result, "w", encoding="utf-8") as handle:
        json.dump(record, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
