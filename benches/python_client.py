"""Times one tiny run from submit to completed, driven two ways from one interpreter:
through ``runyard.Client`` (``submit`` then ``wait``) and through raw HTTP with the
standard library's ``http.client`` doing the same requests by hand. Run by
``benches/python_client.rs`` against a real server; prints one JSON object,
``{"client_ms": [...], "raw_ms": [...]}``, on stdout.

Both arms do the same work over one keep-alive connection: ``POST /api/v1/runs``,
then the run's event stream from the submit answer's ``last_seq`` read until the
server ends it (after ``RunCompleted`` and the slot's release), then ``GET`` the run's
final view. The clock runs inside this script (``time.perf_counter``), around each
submit-to-completed only: interpreter start-up and imports are outside it. Rounds
alternate which arm goes first; the first two rounds warm up and are not counted.

    python benches/python_client.py http://127.0.0.1:8080 20
"""

import http.client
import json
import sys
import time
import uuid
from urllib.parse import urlsplit

import runyard


def spec():
    """A tiny synthetic run (a fraction of a second of training); a new name each
    time, so each submit makes a new run."""
    return {
        "name": "bench-py-%s" % uuid.uuid4().hex[:12],
        "model": {"kind": "mlp", "hidden": [8]},
        "data": {"kind": "synthetic", "samples": 256, "features": 8, "classes": 2, "seed": 3},
        "optimizer": {"kind": "adam", "lr": 0.01},
        "epochs": 1,
        "batch_size": 32,
        "seed": 1,
    }


def with_client(client):
    started = time.perf_counter()
    run = client.submit(spec())
    final = client.wait(run, progress=False)
    elapsed = time.perf_counter() - started
    assert final["state"] == "completed", final["state"]
    return elapsed


def with_raw_http(connection):
    started = time.perf_counter()
    body = json.dumps(spec())
    connection.request("POST", "/api/v1/runs", body=body,
                       headers={"content-type": "application/json"})
    answer = connection.getresponse()
    run = json.loads(answer.read())
    assert answer.status == 201, (answer.status, run)
    connection.request("GET", "/api/v1/runs/%s/stream?after=%d" % (run["id"], run["last_seq"]),
                       headers={"accept": "text/event-stream"})
    stream = connection.getresponse()
    assert stream.status == 200, stream.status
    ended = False
    while True:
        line = stream.readline()
        if not line:
            break  # the server ends a run's stream after its end
        if line.startswith(b"event: Run") and line.strip() in (
                b"event: RunCompleted", b"event: RunFailed", b"event: RunCancelled"):
            ended = True
    assert ended, "the stream ended before the run did"
    connection.request("GET", "/api/v1/runs/%s" % run["id"])
    answer = connection.getresponse()
    final = json.loads(answer.read())
    elapsed = time.perf_counter() - started
    assert final["state"] == "completed", final["state"]
    return elapsed


def main():
    url, rounds = sys.argv[1], int(sys.argv[2])
    parts = urlsplit(url)
    warm_up = 2
    times = {"client_ms": [], "raw_ms": []}
    with runyard.Client(url) as client:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        arms = [("client_ms", lambda: with_client(client)),
                ("raw_ms", lambda: with_raw_http(connection))]
        for round_ in range(warm_up + rounds):
            order = arms if round_ % 2 == 0 else arms[::-1]
            for name, arm in order:
                elapsed = arm()
                if round_ >= warm_up:
                    times[name].append(elapsed * 1000.0)
        connection.close()
    print(json.dumps(times))


if __name__ == "__main__":
    main()
