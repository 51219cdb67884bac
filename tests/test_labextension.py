"""The JupyterLab extension's own (jest) tests, and its command list kept in step with the magics."""

import json
import shutil
import subprocess

import pytest

from llm_magics.magics import command_spec
from support import ROOT

LABEXTENSION = ROOT / "labextension"


def test_completion_list_matches_the_magics():
    shipped = json.loads((LABEXTENSION / "src" / "commands.json").read_text())
    assert shipped == command_spec(), "run: python -m llm_magics commands > labextension/src/commands.json"


def test_protocol_fixture_matches_the_kernel():
    """jest checks labextension/src/protocol.ts against this file (test/protocol.test.ts)."""
    from llm_magics.frontend import protocol

    shipped = json.loads((LABEXTENSION / "test" / "protocol.json").read_text())
    assert shipped == protocol(), "run: python -m llm_magics protocol > labextension/test/protocol.json"


def _declared(message: dict, record) -> None:
    """`message` has every required field of the TypedDict `record` and no field it does not declare."""
    declared = set(record.__annotations__)
    assert record.__required_keys__ <= message.keys() <= declared, (record.__name__, sorted(message))


def test_the_kernel_sends_what_the_protocol_declares():
    """Every message the kernel sends, and every answer to a page's request, has the fields frontend.py
    declares (so what protocol.json says, and protocol.ts with it, is what goes over the comm)."""
    from llm_magics import Session
    from llm_magics.frontend import (
        ActiveRun,
        FrontendBridge,
        HistoryMessage,
        HistoryRequest,
        ModelStatus,
        RunRow,
        SnapshotRequest,
        StatusMessage,
        kind,
    )
    from support import DATA

    class Comm:  # the page's end of a comm
        def __init__(self):
            self.received = []

        def send(self, message):
            self.received.append(json.loads(json.dumps(message)))  # as JSON carries it

    s = Session()
    bridge = FrontendBridge(s, min_interval=0)
    bridge.comm = Comm()
    s.step_listeners.append(bridge.on_step)
    s.train(text=(DATA / "tiny_corpus.txt").read_text() * 3, from_scratch=True, steps=3, seq_len=32, progress=False)
    bridge.after_cell()
    page = Comm()
    run_id = s.runs[0].record_id
    for request, data in [
        (SnapshotRequest, {"type": kind(SnapshotRequest), "request_id": "a"}),
        (HistoryRequest, {"type": kind(HistoryRequest), "id": run_id, "request_id": "b"}),
        (HistoryRequest, {"type": kind(HistoryRequest), "id": "no-such-run", "request_id": "c"}),
    ]:
        _declared(data, request)
        bridge.answer(page, {"content": {"data": data}})
    sent = bridge.comm.received + page.received
    assert [m["type"] for m in sent] == ["status"] * 4 + ["status", "history", "history"]
    assert [m.get("reply_to") for m in page.received] == ["a", "b", "c"]
    assert page.received[1]["loss"] and "no-such-run" in page.received[2]["error"]
    for message in sent:
        _declared(message, StatusMessage if message["type"] == kind(StatusMessage) else HistoryMessage)
        for row in message.get("runs", []):
            _declared(row, RunRow)
        if message.get("active"):
            _declared(message["active"], ActiveRun)
    assert sum(1 for m in sent if m.get("active")) == 3
    status = sent[-3]["status"]  # the page reads these fields of Session.status(): all there but the GPU's
    assert set(ModelStatus.__annotations__) - {"gpu_memory_mb"} <= status.keys()


@pytest.mark.slow
def test_jest_suite_passes():
    import os

    if not (LABEXTENSION / "node_modules").is_dir() or not shutil.which("npm"):
        why = "labextension dependencies not installed (bash .ci/setup installs them)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {why}: the extension's jest suite must run in CI")  # never a silent skip
        pytest.skip(why)
    done = subprocess.run(["npm", "test", "--silent"], cwd=LABEXTENSION, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "failed" not in done.stderr.split("Tests:")[-1].split("\n")[0]


def test_prebuilt_extension_is_in_the_package():
    built = ROOT / "llm_magics" / "labextension"
    package = json.loads((built / "package.json").read_text())
    assert package["name"] == "llm-magics"
    assert any((built / "static").glob("remoteEntry.*.js"))


@pytest.mark.slow
def test_kernel_side_snapshot_and_throttled_progress():
    from llm_magics import Session
    from llm_magics.frontend import FrontendBridge, snapshot
    from support import DATA

    class Comm:  # the frontend's end of the comm (no kernel here): what reaches JupyterLab
        def __init__(self):
            self.received = []

        def send(self, message):
            self.received.append(message)

    s = Session()
    bridge = FrontendBridge(s, min_interval=3600)
    bridge.comm = Comm()
    s.step_listeners.append(bridge.on_step)
    s.train(text=(DATA / "tiny_corpus.txt").read_text() * 3, from_scratch=True, steps=12, seq_len=32, progress=False)
    progress = [m for m in bridge.comm.received if m["active"]]
    assert [m["active"]["step"] for m in progress] == [1, 12]  # the first step, then throttled to the last
    message = snapshot(s)
    json.dumps(message)  # plain JSON for the comm
    assert message["status"]["model"].startswith("from-scratch") and message["runs"][0]["steps"] == 12
    assert message["active"] is None and message["status"]["process_memory_mb"] > 0


@pytest.mark.slow
def test_wheel_ships_the_prebuilt_extension(tmp_path):
    import sys
    import zipfile

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    names = zipfile.ZipFile(next(tmp_path.glob("llm_magics-*.whl"))).namelist()
    shared = [n for n in names if "/share/jupyter/labextensions/llm-magics/" in n]
    assert any(n.endswith("/package.json") for n in shared)
    assert any("/static/remoteEntry." in n for n in shared)
    assert "llm_magics/views/attention.js" in names  # the attention widget's JS, no CDN


def _our_messages(client, seconds, want):
    """iopub comm messages of llm-magics until `want(data)` holds (or the time is up)."""
    import queue
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            msg = client.get_iopub_msg(timeout=max(0.1, end - time.monotonic()))
        except queue.Empty:
            break
        data = msg["content"].get("data") if msg["msg_type"] in ("comm_open", "comm_msg") else None
        if isinstance(data, dict) and data.get("source") == "llm-magics" and want(data, msg["parent_header"]):
            return msg, data
    pytest.fail("the kernel sent no such message")


def _comm(client, msg_type, content, subshell=None):
    msg = client.session.msg(msg_type, content)
    if subshell:
        msg["header"]["subshell_id"] = subshell
    client.shell_channel.send(msg)


@pytest.mark.slow
def test_a_page_that_connects_later_asks_the_kernel_even_while_it_trains(tmp_path):
    """What a reloaded page does, over a real kernel: find our comm (comm_info), open its own to ask for a
    snapshot and a run's curves; and while a cell trains, ask over a kernel subshell and get the progress."""
    import os

    from jupyter_client.manager import start_new_kernel

    from llm_magics import runs
    from support import DATA

    corpus = json.dumps((DATA / "tiny_corpus.txt").read_text() * 3)
    manager, client = start_new_kernel(
        kernel_name="python3", cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    try:
        client.execute_interactive("%load_ext llm_magics\nimport llm_magics", timeout=120)
        reply = client.comm_info(target_name="llm_magics", reply=True, timeout=30)
        comms = list(reply["content"]["comms"])
        assert len(comms) == 1  # opened at %load_ext: a page can find it before anything is loaded
        client.execute_interactive(
            f"_ = llm_magics.session.train(text={corpus}, from_scratch=True, steps=12, seq_len=32, progress=False)",
            timeout=300,
        )

        # the page's own comm: its opening asks for a snapshot
        _comm(
            client,
            "comm_open",
            {"comm_id": "page", "target_name": "llm_magics", "data": {"type": "request", "request_id": "r1"}},
        )
        _, status = _our_messages(client, 30, lambda d, _: d["type"] == "status" and d["reply_to"] == "r1")
        assert status["status"]["model"].startswith("from-scratch") and status["active"] is None
        (run,) = status["runs"]
        assert run["status"] == "finished" and run["steps"] == 12 and run["kind"] == "train"
        _comm(client, "comm_msg", {"comm_id": "page", "data": {"type": "history", "id": run["id"]}})
        _, curves = _our_messages(client, 30, lambda d, _: d["type"] == "history")
        on_disk = runs.load(run["id"], os.environ["LLM_MAGICS_RUNS_DIR"])  # the independent record: its folder
        assert curves["loss"] == [[int(s), float(v)] for s, v in zip(on_disk["step"], on_disk["loss"])]
        _comm(client, "comm_msg", {"comm_id": "page", "data": {"type": "history", "id": "no-such-run"}})
        _, unknown = _our_messages(client, 30, lambda d, _: d["type"] == "history")
        assert "not in this kernel" in unknown["error"]

        # A cell that trains for long: the main shell is busy, a subshell answers (ipykernel 7, JEP 91).
        client.execute(
            f"llm_magics.session.train(text={corpus}, from_scratch=True, steps=100000, seq_len=32, progress=False)"
        )
        _our_messages(client, 120, lambda d, _: d["type"] == "status" and d["active"] and d["active"]["step"] >= 3)
        client.control_channel.send(client.session.msg("create_subshell_request", {}))
        subshell = client.get_control_msg(timeout=30)["content"]["subshell_id"]
        _comm(
            client,
            "comm_open",
            {"comm_id": "reloaded", "target_name": "llm_magics", "data": {"type": "request", "request_id": "r2"}},
            subshell=subshell,
        )
        # the reply to this request (not one of the throttled pushes), while the cell trains
        _, live = _our_messages(client, 10, lambda d, _: d["type"] == "status" and d["reply_to"] == "r2")
        assert live["active"] and len(live["active"]["loss_curve"]) >= 3
        assert live["active"]["loss_curve"][0][0] == 1 and len(live["runs"]) == 1
        # later messages on that comm go to its subshell too (ipykernel routes them where it last replied from)
        _comm(client, "comm_msg", {"comm_id": "reloaded", "data": {"type": "history", "id": run["id"]}})
        _, again = _our_messages(client, 10, lambda d, _: d["type"] == "history")
        assert again["loss"] == curves["loss"]
        manager.interrupt_kernel()
        _, ended = _our_messages(
            client, 120, lambda d, _: d["type"] == "status" and d["active"] is None and len(d["runs"]) == 2
        )
        assert ended["runs"][1]["status"].startswith("stopped at step")
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
