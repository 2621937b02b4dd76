"""runyard.Client against a real server (see conftest.py for what starts it)."""

import hashlib
import json
import os
import uuid
from pathlib import Path

import pytest

import runyard
from cutproxy import CuttingProxy

TERMINAL = {"RunCompleted", "RunFailed", "RunCancelled"}


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---- submit and wait ----------------------------------------------------------------


def test_a_dict_spec_is_submitted_and_waited_for_to_completed(client, spec):
    run = client.submit(spec())
    assert run["state"] in ("queued", "starting", "running")  # the slot may be free
    assert run["name"] and run["spec"]["epochs"] == 1
    done = client.wait(run, timeout=120, progress=False)
    assert done["id"] == run["id"]
    assert done["state"] == "completed"
    assert done["metrics"]["epochs_completed"] == 1


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".toml"])
def test_a_spec_file_is_sent_with_its_media_type(client, spec, tmp_path, suffix):
    body = spec()
    path = tmp_path / ("spec" + suffix)
    if suffix == ".json":
        path.write_text(json.dumps(body))
    elif suffix == ".yaml":
        path.write_text(
            "name: %s\nmodel: {kind: mlp, hidden: [8]}\n"
            "data: {kind: synthetic, samples: 200, features: 8, classes: 2, seed: 3}\n"
            "optimizer: {kind: adam, lr: 0.01}\nepochs: 1\nbatch_size: 32\nseed: 1\n"
            % body["name"]
        )
    else:
        path.write_text(
            'name = "%s"\nepochs = 1\nbatch_size = 32\nseed = 1\n'
            '[model]\nkind = "mlp"\nhidden = [8]\n'
            '[data]\nkind = "synthetic"\nsamples = 200\nfeatures = 8\nclasses = 2\nseed = 3\n'
            '[optimizer]\nkind = "adam"\nlr = 0.01\n' % body["name"]
        )
    run = client.submit(path)
    assert run["name"] == body["name"]
    assert run["spec"]["optimizer"]["lr"] == 0.01
    assert client.wait(run["id"], timeout=120, progress=False)["state"] == "completed"


def test_a_spec_file_of_another_suffix_is_refused_before_sending(client, tmp_path):
    path = tmp_path / "spec.txt"
    path.write_text("{}")
    with pytest.raises(ValueError, match=r"\.json, \.toml, \.yaml, \.yml"):
        client.submit(path)


def test_on_duplicate_and_idempotency_keys(client, spec):
    body = spec()
    first = client.submit(body)
    again = client.submit(body)  # return_existing, the server's default
    assert again["id"] == first["id"]
    with pytest.raises(runyard.Duplicate) as refused:
        client.submit(body, on_duplicate="reject")
    assert refused.value.code == "duplicate" and refused.value.status == 409
    assert first["id"] in refused.value.detail
    key = uuid.uuid4().hex
    rerun = client.submit(body, on_duplicate="rerun", idempotency_key=key)
    assert rerun["id"] != first["id"]
    replayed = client.submit(body, on_duplicate="rerun", idempotency_key=key)
    assert replayed["id"] == rerun["id"], "a retried key makes no second run"
    for run in (first, rerun):
        assert client.wait(run, timeout=120, progress=False)["state"] == "completed"


def test_wait_draws_a_progress_bar_when_asked(client, spec, capsys):
    body = spec(epochs=2)
    run = client.submit(body)
    client.wait(run, timeout=120, progress=True)
    err = capsys.readouterr().err
    assert body["name"] in err
    assert "100%" in err and "RunCompleted" in err


def test_wait_is_quiet_without_a_terminal(client, spec, capsys):
    run = client.submit(spec())
    client.wait(run, timeout=120)  # pytest's stderr is not a terminal
    assert capsys.readouterr().err == ""


def test_wait_gives_up_after_its_timeout(client, spec):
    run = client.submit(spec(epochs=100000))
    with pytest.raises(TimeoutError):
        client.wait(run, timeout=0.5, progress=False)
    client.cancel(run)
    assert client.wait(run, timeout=120, progress=False)["state"] == "cancelled"


# ---- listing and events -------------------------------------------------------------


def test_runs_follows_the_cursor_with_filters(client, spec):
    batch = uuid.uuid4().hex[:8]
    ids = [client.submit(spec(labels={"batch": batch, "n": str(i)}))["id"] for i in range(5)]
    for run_id in ids:
        client.wait(run_id, timeout=120, progress=False)
    listed = [r["id"] for r in client.runs(label="batch=" + batch, page_size=2)]
    assert listed == list(reversed(ids)), "newest first, every run once, across 3 pages"
    oldest_first = client.runs(label={"batch": batch}, sort="created_at", page_size=2)
    assert [r["id"] for r in oldest_first] == ids
    completed = client.runs(state="completed", label=["batch=" + batch, "n=3"], page_size=1)
    assert [r["id"] for r in completed] == [ids[3]]
    assert list(client.runs(state="failed", label={"batch": batch})) == []
    assert client.count_runs(label={"batch": batch}) == 5
    assert client.count_runs(state="completed", label=["batch=" + batch, "n=3"]) == 1
    assert client.count_runs(state="failed", label="batch=" + batch) == 0
    assert client.count_runs() >= 5
    for bad_call in (lambda: list(client.runs(state="sideways")), lambda: client.count_runs(state="sideways")):
        with pytest.raises(runyard.BadRequest) as bad:
            bad_call()
        assert bad.value.code == "invalid_query" and "state" in bad.value.detail


def test_events_after_a_cursor(client, spec):
    run = client.submit(spec())
    client.wait(run, timeout=120, progress=False)
    events = client.events(run)
    types = [e["type"] for e in events]
    assert types[0] == "RunSubmitted" and "RunCompleted" in types
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)
    middle = seqs[len(seqs) // 2]
    later = client.events(run["id"], after=middle)
    assert [e["seq"] for e in later] == [s for s in seqs if s > middle]
    epochs = client.events(run, types="EpochCompleted")
    assert epochs == [e for e in events if e["type"] == "EpochCompleted"] and epochs
    ended = client.events(run, after=middle, types=["EpochCompleted", "RunCompleted"])
    assert ended == [e for e in later if e["type"] in ("EpochCompleted", "RunCompleted")]
    with pytest.raises(runyard.BadRequest) as bad:
        client.events(run, types="Epoch")
    assert bad.value.code == "invalid_query" and bad.value.detail.startswith("type:")
    assert client.run(run, at_seq=seqs[0])["state"] == "queued"


# ---- streams ------------------------------------------------------------------------


def test_a_stream_reads_a_run_to_its_end(client, spec):
    run = client.submit(spec(epochs=2))
    events = list(client.stream(run, every="100ms"))
    names = [e.event for e in events]
    assert names[0] == "RunSubmitted" and names[-1] == "SlotReleased"
    assert "RunCompleted" in names and "progress" in names
    lifecycle = [e for e in events if e.id is not None]
    assert [e.id for e in lifecycle] == [e["seq"] for e in client.events(run)]
    assert all(e.data["seq"] == e.id and e.type == e.data["type"] for e in lifecycle)
    progress = [e for e in events if e.event == "progress"]
    assert all(e.id is None and e.data["run_id"] == run["id"] for e in progress)


def test_a_replayed_stream_cut_twice_resumes_without_skipping_or_repeating(client, url, spec):
    run = client.submit(spec(epochs=2))
    client.wait(run, timeout=120, progress=False)
    journal = [e["seq"] for e in client.events(run)]
    with CuttingProxy(url, cut_after=1 << 30, cuts=0) as whole:
        with runyard.Client(whole.url) as through:
            uncut = list(through.stream(run))
    total = whole.sent[0]
    # Cut at a third of the answer: the second connection has more than that left.
    with CuttingProxy(url, cut_after=total // 3, cuts=2) as proxy:
        with runyard.Client(proxy.url) as through:
            events = list(through.stream(run))
    assert proxy.cut == 2, proxy.sent
    assert len(proxy.requests) == 3
    ids = [e.id for e in events if e.id is not None]
    assert ids == journal, "each event once, in order, across the cuts"
    assert [(e.event, e.data) for e in events] == [(e.event, e.data) for e in uncut]
    # Each reconnection asked for what follows the last event it had.
    resumed_from = proxy.last_event_ids()
    assert resumed_from[0] is None
    for before_cut, asked in zip(_ids_before_each_cut(events, proxy), resumed_from[1:]):
        assert asked == before_cut


def _ids_before_each_cut(events, proxy):
    """The last id yielded before each reconnection, from the ids the proxy saw."""
    asked = [a for a in proxy.last_event_ids()[1:] if a is not None]
    ids = [str(e.id) for e in events if e.id is not None]
    assert all(a in ids for a in asked), (asked, ids)
    return asked


def test_a_live_stream_cut_mid_training_resumes_without_skipping_or_repeating(
        client, url, spec):
    run = client.submit(spec(epochs=3, data={"kind": "synthetic", "samples": 600,
                                             "features": 8, "classes": 2, "seed": 3}))
    first = client.events(run)[0]["seq"]  # RunSubmitted, the big one, read already
    with CuttingProxy(url, cut_after=700, cuts=3) as proxy:
        with runyard.Client(proxy.url) as through:
            events = list(through.stream(run, after=first, every="50ms"))
    assert proxy.cut >= 1, proxy.sent
    ids = [e.id for e in events if e.id is not None]
    assert ids == [e["seq"] for e in client.events(run, after=first)]
    assert len(set(ids)) == len(ids)
    assert events[-1].event == "SlotReleased"
    assert all(a is not None for a in proxy.last_event_ids())


def test_stream_all_filters_and_stops_when_closed(client, spec):
    run = client.submit(spec())
    client.wait(run, timeout=120, progress=False)
    seen = []
    stream = client.stream_all(run=run["id"], type=["RunSubmitted", "RunCompleted"])
    for event in stream:
        seen.append(event)
        if event.event == "RunCompleted":
            break
    stream.close()
    assert [e.event for e in seen] == ["RunSubmitted", "RunCompleted"]
    assert all(e.data["run_id"] == run["id"] for e in seen)
    after = seen[0].id
    resumed = client.stream_all(run=run["id"], type="RunCompleted", after=after)
    assert next(resumed).id == seen[1].id
    resumed.close()


# ---- control ------------------------------------------------------------------------


def test_pause_resume_and_cancel(client, spec):
    run = client.submit(spec(epochs=100000))
    for event in client.stream(run):
        if event.event == "progress":
            break  # training
    paused = client.pause(run)
    assert paused["state"] == "paused", paused["state"]
    with pytest.raises(runyard.Conflict) as conflict:
        client.pause(run)
    assert conflict.value.code == "conflict" and conflict.value.status == 409
    resumed = client.resume(run, idempotency_key=uuid.uuid4().hex)
    assert resumed["state"] in ("queued", "starting", "running")
    cancelled = client.cancel(run)
    assert cancelled["state"] in ("cancelled", "running", "pausing", "queued", "starting")
    assert client.wait(run, timeout=120, progress=False)["state"] == "cancelled"
    types = [e["type"] for e in client.events(run)]
    assert "RunPaused" in types and "RunResumed" in types and types[-1] == "SlotReleased"


# ---- metrics, artifacts, logs -------------------------------------------------------


def test_metrics_as_a_list_and_as_a_data_frame(client, spec):
    run = client.submit(spec(epochs=3))
    client.wait(run, timeout=120, progress=False)
    points = client.metrics(run, "loss")
    assert points and set(points[0]) == {"step", "time", "value"}
    steps = [p["step"] for p in points]
    assert steps == sorted(steps)
    frame = client.metrics(run["id"], "loss", as_frame=True)
    assert list(frame.columns) == ["step", "time", "value"]
    assert list(frame["step"]) == steps
    assert str(frame["time"].dt.tz) == "UTC"
    assert frame.attrs["run_id"] == run["id"]
    few = client.metrics(run, "percent", points=2)
    assert len(few) <= 2 and few[-1]["value"] == 100.0
    with pytest.raises(runyard.BadRequest) as bad:
        client.metrics(run, "no_such_metric")
    assert bad.value.code == "invalid_query"


def test_download_is_checked_against_the_journaled_sha256(client, spec, tmp_path):
    run = client.submit(spec())
    done = client.wait(run, timeout=120, progress=False)
    artifact = next(a for a in done["artifacts"] if a["name"] == "final.safetensors")
    path = client.download(run, "final.safetensors", tmp_path / "weights.safetensors")
    assert path == tmp_path / "weights.safetensors"
    assert sha256(path) == artifact["sha256"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask, "an ordinary file's mode"
    into_dir = client.download(run, path=tmp_path)
    assert into_dir == tmp_path / "final.safetensors"
    checkpoint = done["checkpoints_kept"][-1]
    name = checkpoint["path"].rsplit("/", 1)[-1]
    assert sha256(client.download(run, name, tmp_path)) == checkpoint["sha256"]
    with pytest.raises(runyard.NotFound) as missing:
        client.download(run, "nothing.bin", tmp_path / "nothing.bin")
    assert missing.value.code == "artifact_not_found"
    assert not (tmp_path / "nothing.bin").exists()


@pytest.mark.skipif(not os.environ.get("RUNYARD_DATA_DIR"), reason="RUNYARD_DATA_DIR unset")
def test_a_tampered_artifact_raises_and_leaves_no_file(client, spec, tmp_path):
    run = client.submit(spec())
    done = client.wait(run, timeout=120, progress=False)
    artifact = next(a for a in done["artifacts"] if a["name"] == "final.safetensors")
    on_disk = Path(os.environ["RUNYARD_DATA_DIR"]) / artifact["path"]
    with open(on_disk, "r+b") as f:  # one bit flipped, the size unchanged
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 1]))
    target = tmp_path / "weights.safetensors"
    with pytest.raises(runyard.IntegrityError) as bad:
        client.download(run, "final.safetensors", target)
    assert bad.value.expected == artifact["sha256"]
    assert bad.value.actual == sha256(on_disk)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == [], "no temporary file left behind"


def test_logs_of_a_command_run_read_and_followed(client):
    command = {
        "name": "py-logs-%s" % uuid.uuid4().hex[:8],
        "kind": "command",
        "argv": ["sh", "-c", "for i in 1 2 3 4 5; do echo line $i; sleep 0.1; done; echo oops >&2"],
    }
    run = client.submit(command)
    followed = list(client.logs(run, follow=True))
    assert [l for l in followed if l.startswith("line")] == ["line %d" % i for i in range(1, 6)]
    assert client.wait(run, timeout=120, progress=False)["state"] == "completed"
    tail = list(client.logs(run, tail=2))
    assert tail == ["line 4", "line 5"]
    assert list(client.logs(run["id"], stream="stderr", tail=1)) == ["oops"]


# ---- problems -----------------------------------------------------------------------


def test_problem_answers_raise_typed_exceptions(client, spec):
    with pytest.raises(runyard.NotFound) as missing:
        client.run("01930000-0000-7000-8000-000000000000")
    error = missing.value
    assert isinstance(error, runyard.ProblemError)
    assert (error.status, error.code) == (404, "run_not_found")
    assert error.detail and error.problem["title"] and error.problem["type"]
    assert "run_not_found" in str(error)

    with pytest.raises(runyard.InvalidSpec) as invalid:
        client.submit(spec(epochs=0))
    assert invalid.value.status == 422 and invalid.value.code == "invalid_spec"
    assert "epochs" in invalid.value.detail

    with pytest.raises(runyard.NotFound) as no_sweep:
        client.sweep("01930000-0000-7000-8000-000000000000")
    assert no_sweep.value.code == "sweep_not_found"

    run = client.submit(spec())
    client.wait(run, timeout=120, progress=False)
    with pytest.raises(runyard.Conflict) as conflict:
        client.cancel(run)
    assert conflict.value.code == "conflict" and run["id"] in conflict.value.detail
    with pytest.raises(runyard.NotFound):
        list(client.stream("01930000-0000-7000-8000-000000000000"))


def test_a_code_picks_the_exception_and_an_unknown_code_its_status():
    from runyard.errors import problem_error

    problem = {"status": 405, "code": "method_not_allowed", "detail": "PATCH"}
    assert type(problem_error(405, problem)) is runyard.MethodNotAllowed
    assert type(problem_error(409, {"code": "something_new"})) is runyard.Conflict
    assert type(problem_error(502, {"title": "Bad Gateway"})) is runyard.ServerError
    teapot = problem_error(418, {"detail": "short and stout"})
    assert type(teapot) is runyard.ProblemError and teapot.code is None
    assert str(teapot) == "418 error: short and stout"


@pytest.mark.skipif(not os.environ.get("RUNYARD_AUTH_URL"), reason="RUNYARD_AUTH_URL unset")
def test_a_token_is_sent_as_a_bearer_and_its_absence_is_typed(spec):
    auth_url = os.environ["RUNYARD_AUTH_URL"]
    with runyard.Client(auth_url) as anonymous:
        with pytest.raises(runyard.Unauthorized) as refused:
            anonymous.run("01930000-0000-7000-8000-000000000000")
        assert refused.value.status == 401 and refused.value.code == "unauthorized"
    with runyard.Client(auth_url, token=os.environ["RUNYARD_READ_TOKEN"]) as reader:
        assert isinstance(list(reader.runs()), list)
        with pytest.raises(runyard.Forbidden) as forbidden:
            reader.submit(spec())
        assert forbidden.value.code == "forbidden"
    with runyard.Client(auth_url, token=os.environ["RUNYARD_WRITE_TOKEN"]) as writer:
        run = writer.submit(spec())
        events = [e.event for e in writer.stream(run)]
        assert "RunCompleted" in events
        assert writer.wait(run, progress=False)["state"] == "completed"


# ---- sweeps -------------------------------------------------------------------------


def sweep_spec(spec, **searcher):
    base = spec()
    return {
        "name": "py-sweep-%s" % uuid.uuid4().hex[:8],
        "base": base,
        "space": {"optimizer.lr": {"grid": [0.01, 0.02]}},
        "searcher": dict({"kind": "grid", "metric": "train_loss"}, **searcher),
    }


def test_a_two_trial_grid_sweep_is_submitted_listed_and_followed(client, spec, tmp_path):
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(sweep_spec(spec)))
    sweep = client.submit_sweep(path)
    assert sweep["state"] == "running" and sweep["searcher"] == "grid"
    assert sweep["id"] in [s["id"] for s in client.sweeps()]
    events = list(client.sweep_stream(sweep))
    names = [e.event for e in events]
    assert names.count("TrialCreated") == 2 and names[-1] == "SweepCompleted"
    ids = [e.id for e in events if e.id is not None]
    assert ids == sorted(set(ids))
    done = client.sweep(sweep["id"])
    assert done["state"] == "completed"
    assert [t["status"] for t in done["trials"]] == ["finished", "finished"]
    assert {t["run_state"] for t in done["trials"]} == {"completed"}
    trial_runs = list(client.runs(label="sweep=" + sweep["id"]))
    assert len(trial_runs) == 2


def test_a_sweep_is_paused_resumed_and_cancelled(client, spec):
    long = sweep_spec(spec)
    long["base"]["epochs"] = 100000  # live until cancelled
    sweep = client.submit_sweep(long)
    trial = until(client.sweep_stream(sweep), "TrialCreated").data["data"]["run"]
    until(client.stream(trial), "progress")  # training
    assert client.pause_sweep(sweep)["state"] == "paused"
    with pytest.raises(runyard.Conflict):
        client.pause_sweep(sweep)
    # Resumed only once its trial has paused: a cancel that reaches a trial still
    # pausing is lost today (the run stays paused with cancel_requested set).
    paused_at = until(client.stream(trial), "RunPaused").id
    assert client.resume_sweep(sweep["id"])["state"] == "running"
    until(client.stream(trial, after=paused_at), "progress")  # training again
    cancelled = client.cancel_sweep(sweep)
    assert cancelled["state"] == "cancelled"
    with pytest.raises(runyard.Conflict):
        client.cancel_sweep(sweep["id"])
    names = [e.event for e in client.sweep_stream(sweep)]
    assert "SweepCancelled" in names
    assert "SweepPaused" in names and "SweepResumed" in names
    assert client.wait(trial, timeout=120, progress=False)["state"] == "cancelled"
    assert [r["id"] for r in client.runs(label="sweep=" + sweep["id"])] == [trial]


def until(stream, name):
    """Reads ``stream`` up to its first event called ``name``, and answers it."""
    try:
        return next(e for e in stream if e.event == name)
    finally:
        stream.close()
