"""Joining a real Ray cluster from a shell, as a user does: `batchlens run --cluster ...` in a new
process against the clusters of conftest.py (one with tokens and two nodes, one without), the ways Ray
offers (RAY_ADDRESS with `auto`, HOST:PORT, ray://; `auto` finding the token itself is test_cluster.py's
join, in this process), and every way that fails, each said in one sentence.

The runs that join go at once, then the ones that fail (they mostly wait out Ray's retries, the Ray
Client's 30 s the longest): each group takes about as long as its slowest."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
import torchvision

from batchlens.cli import main
from batchlens.core.run.config import RunConfig
from batchlens.core.run.runner import Runner
from tests.cluster.conftest import TOKEN
from tests.helpers import assert_no_traceback, make_denoise_folder, make_shapes_folder

TOKEN_SOURCE = "`ray get-auth-token` on the head node prints it; it is kept there in ~/.ray/auth_token"
# Ray's own console lines: its loggers' and its C++ core's start with a time stamp, a worker's with its pid.
RAY_LINE = re.compile(r"^(\[?\d{4}-\d\d-\d\d \d\d:\d\d:\d\d|\(\w+ pid=)", re.M)


def read_lines(path: Path) -> list[dict]:
    """predictions.jsonl without what a line measures (time; a local run's memory peak, which a
    cluster's lines leave out): the only fields allowed to differ between runs."""
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for line in lines:
        assert line.pop("seconds") >= 0
        line.pop("peak_memory_bytes", None)
    return lines


@dataclass
class Launched:
    """`batchlens run` started in its own process, with the environment a user's shell would hold."""

    name: str
    output: Path
    process: subprocess.Popen

    def finish(self) -> tuple[int, str, str]:
        stdout, stderr = self.process.communicate(timeout=400)
        assert_no_traceback(stderr)
        return self.process.returncode, stdout, stderr


def launch(name: str, args: list[str], output: Path, env: dict, cwd: Path) -> Launched:
    command = [sys.executable, "-m", "batchlens", "run", *args, "--output", str(output), "--no-progress"]
    command += ["--batch-size", "2", "--workers", "1"]
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return Launched(name, output, process)


@pytest.mark.cluster
def test_every_way_of_joining_with_tokens_on_and_off_and_every_failure_in_one_sentence(
    clusters, tmp_path: Path
):
    token, unguarded = clusters.token, clusters.open
    shapes = tmp_path / "shapes"
    make_shapes_folder(shapes, 6)
    list(Runner(RunConfig("demo-shapes", shapes, tmp_path / "local", device="cpu", batch_size=2)).events())
    # A torchvision architecture with seeded offline weights, through ray:// (the driver on the cluster).
    torch.manual_seed(0)
    weights = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.get_model("mobilenet_v3_small", weights=None).state_dict(), weights)
    photos = tmp_path / "photos"
    make_shapes_folder(photos, 3, size=120)
    options = {"weights": str(weights)}
    reference = RunConfig(
        "mobilenet_v3_small", photos, tmp_path / "local-mobilenet", batch_size=2, model_options=options
    )
    list(Runner(reference).events())
    resumed = resume_folder(tmp_path)

    no_token = tmp_path / "home"  # a user's home without ~/.ray/auth_token
    no_token.mkdir()
    demo = ["--model", "demo-shapes", "--input", str(shapes)]
    mobilenet = ["--model", "mobilenet_v3_small", "--weights", str(weights), "--input", str(photos)]
    ways = {  # the cluster, --cluster, the model's arguments, the user's environment
        "ray://, token": (
            token,
            f"ray://{token.host}:{token.client_port}",
            mobilenet,
            {**token.env, "HOME": str(no_token), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN},
        ),
        "auto, RAY_ADDRESS": (unguarded, "auto", demo, {**unguarded.env, "RAY_ADDRESS": unguarded.address}),
        "ray://": (unguarded, f"ray://{unguarded.host}:{unguarded.client_port}", demo, unguarded.env),
    }
    failures = {  # --cluster, the user's environment, the one sentence
        "auto, no token here": (
            "auto",
            {**token.env, "HOME": str(no_token)},
            f"The Ray cluster at {token.address} uses token authentication and no token was sent: set "
            f"RAY_AUTH_MODE=token and RAY_AUTH_TOKEN to the cluster's token ({TOKEN_SOURCE}).",
        ),
        "ray://, no token here": (
            f"ray://{token.host}:{token.client_port}",
            {**token.env, "HOME": str(no_token)},
            f"The Ray cluster at ray://{token.host}:{token.client_port} uses token authentication and no "
            f"token was sent: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN to the cluster's token "
            f"({TOKEN_SOURCE}).",
        ),
        "HOST:PORT, token here but not sent": (
            token.address,
            token.env,
            f"The Ray cluster at {token.address} uses token authentication: set RAY_AUTH_MODE=token, so "
            f"that Ray sends the token from {token.home / '.ray/auth_token'} (it sends one to a given "
            "address only then).",
        ),
        "HOST:PORT, wrong token": (
            token.address,
            {**token.env, "HOME": str(no_token), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 32},
            f"The Ray cluster at {token.address} refused the token from RAY_AUTH_TOKEN: set RAY_AUTH_TOKEN "
            f"to the cluster's own token ({TOKEN_SOURCE}).",
        ),
        "HOST:PORT, token mode without a token": (
            token.address,
            {**token.env, "HOME": str(no_token), "RAY_AUTH_MODE": "token"},
            f"The Ray cluster at {token.address} needs its token and none was found here: set "
            f"RAY_AUTH_TOKEN to it ({TOKEN_SOURCE}).",
        ),
    }

    def join(name: str) -> Launched:
        _, address, model, env = ways[name]
        output = tmp_path / f"out-{re.sub(r'[^a-zA-Z]+', '-', name)}"
        return launch(name, [*model, "--cluster", address], output, env, tmp_path)

    # Ray's client proxy picks its per-client server's port from one fixed range (23000 on), checking
    # it is free before using it: two ray:// sessions starting at once on two clusters of one machine
    # can take the same port. So the second ray:// run goes later, with the failures.
    runs = [join(name) for name in ways if name != "ray://"]
    # HOST:PORT with tokens: RAY_AUTH_MODE=token, the token from ~/.ray/auth_token; relative folders
    # (the driver resolves them); --resume of an image-to-image run.
    runs.append(
        launch(
            "HOST:PORT, token, resume",
            ["--model", "demo-denoise", "--input", "noisy", "--recursive", "--resume"]
            + ["--cluster", token.address],
            resumed,
            {**token.env, "RAY_AUTH_MODE": "token"},
            tmp_path,
        )
    )
    # No cluster running and no RAY_ADDRESS: `auto` starts one here for the run, and stops it after.
    nowhere = Path(tempfile.mkdtemp(prefix="blray", dir="/tmp"))  # short: Ray's sockets go under it
    (tmp_path / "home-alone").mkdir()  # Ray writes a token there for the cluster it starts
    alone = {**unguarded.env, "RAY_TMPDIR": str(nowhere), "HOME": str(tmp_path / "home-alone")}
    runs.append(launch("auto, alone", [*demo, "--cluster", "auto"], tmp_path / "alone", alone, tmp_path))
    failed = []
    try:
        *joining, resumed, alone = runs
        for run in joining:
            check_joined(run, ways[run.name], tmp_path, mobilenet)
        check_resumed(resumed, tmp_path, token.address)
        check_alone(alone, tmp_path)
        # Then the second ray:// run and the failures, at once (the failures mostly wait out Ray's
        # retries).
        runs.append(join("ray://"))
        failed += [
            launch(name, [*demo, "--cluster", address], tmp_path / f"failed-{i}", env, tmp_path)
            for i, (name, (address, env, _)) in enumerate(failures.items())
        ]
        check_joined(runs[-1], ways["ray://"], tmp_path, mobilenet)
        for run in failed:
            code, stdout, stderr = run.finish()
            assert code == 2 and stderr == f"batchlens: {failures[run.name][2]}\n", f"{run.name}: {stderr}"
            assert not RAY_LINE.search(stdout), run.name
            assert not (run.output / "predictions.jsonl").exists(), run.name
    finally:
        for run in runs + failed:  # a failed check leaves none running (SIGTERM: each stops its Ray)
            if run.process.poll() is None:
                run.process.terminate()
        for run in runs + failed:
            try:
                run.process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                run.process.kill()
                run.process.communicate()
        shutil.rmtree(nowhere, ignore_errors=True)


def check_joined(run: Launched, way: tuple, tmp_path: Path, mobilenet: list) -> None:
    """The local run's lines, no Ray output, and the summary naming the cluster joined."""
    cluster, address, model, _ = way
    code, stdout, stderr = run.finish()
    assert code == 0, f"{run.name}: {stderr}"
    assert not RAY_LINE.search(stdout + stderr), f"{run.name}: Ray's own output reached the user"
    local = tmp_path / ("local-mobilenet" if model is mobilenet else "local") / "predictions.jsonl"
    assert read_lines(run.output / "predictions.jsonl") == read_lines(local), run.name
    joined = json.loads((run.output / "summary.json").read_text())["cluster"]
    assert joined["requested"] == address and joined["address"] == cluster.address, run.name
    assert joined["node_count"] == cluster.nodes and not joined["started_here"], run.name


def check_alone(alone: Launched, tmp_path: Path) -> None:
    code, stdout, stderr = alone.finish()
    assert code == 0 and not RAY_LINE.search(stdout + stderr), stderr
    assert read_lines(alone.output / "predictions.jsonl") == read_lines(tmp_path / "local/predictions.jsonl")
    joined = json.loads((alone.output / "summary.json").read_text())["cluster"]
    assert joined["requested"] == "auto" and joined["started_here"] and joined["node_count"] == 1
    assert (tmp_path / "home-alone/.ray/auth_token").is_file()  # Ray 2.60: tokens on for a new cluster


def resume_folder(tmp_path: Path) -> Path:
    """An image-to-image run left with 3 of 5 lines (out of order) and 2 output files to write again."""
    noisy = tmp_path / "noisy"
    make_denoise_folder(noisy / "sub", 2, size=96)
    make_denoise_folder(noisy, 3, size=80, seed=7)
    reference = RunConfig("demo-denoise", noisy, tmp_path / "local-denoise", batch_size=2, recursive=True)
    list(Runner(reference).events())
    out = tmp_path / "out-resumed"
    list(Runner(replace(reference, output_dir=out)).events())
    full = (out / "predictions.jsonl").read_text().splitlines(keepends=True)
    (out / "predictions.jsonl").write_text("".join(full[:2]) + full[3])  # 3 done, out of order
    for line in full[2:3] + full[4:]:
        (out / json.loads(line)["output"]).unlink()  # the workers must write these again
    return out


def check_resumed(run: Launched, tmp_path: Path, address: str) -> None:
    code, stdout, stderr = run.finish()
    assert code == 0, stderr
    assert "over 2 image(s), 3 already done" in stdout and "Ray cluster, 1 worker(s)" in stdout
    lines = read_lines(run.output / "predictions.jsonl")
    assert lines == read_lines(tmp_path / "local-denoise/predictions.jsonl")
    assert [line["output"] for line in lines] == [
        "noisy_0000.png",
        "noisy_0001.png",
        "noisy_0002.png",
        "sub/noisy_0000.png",
        "sub/noisy_0001.png",
    ]
    for line in lines:  # the workers' PNGs are byte for byte the local engine's
        assert (run.output / line["output"]).read_bytes() == (
            tmp_path / "local-denoise" / line["output"]
        ).read_bytes()
    summary = json.loads((run.output / "summary.json").read_text())
    assert summary["counts"]["already_done"] == 3 and summary["counts"]["ok"] == 2
    assert summary["cluster"]["requested"] == address == summary["cluster"]["address"]


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("address", "sentence"),
    [
        (
            "head",
            "'head' is not a Ray cluster address: give auto, local, HOST:PORT (the head node's GCS "
            "port, 6379 by default) or ray://HOST:PORT (its Ray Client port, 10001 by default).",
        ),
        (
            "no-such-host.invalid:6379",
            "Cannot connect to the Ray cluster at no-such-host.invalid:6379: "
            "there is no host named no-such-host.invalid (check the address).",
        ),
        (
            "ray://127.0.0.1:{port}",
            "No Ray cluster answers at ray://127.0.0.1:{port}: start one with "
            "`ray start --head`, or check the host and the port (the head node's Ray Client port, 10001 by "
            "default).",
        ),
    ],
)
def test_an_address_that_cannot_be_a_cluster_is_one_sentence_at_once(
    no_ray_connection, address, sentence, capsys, shapes_folder, tmp_path
):
    with socket.create_server(("127.0.0.1", 0)) as server:  # a port that was free, and is again
        port = str(server.getsockname()[1])
    out = tmp_path / "out"
    args = ["run", "--model", "demo-shapes", "--input", str(shapes_folder), "--output", str(out)]
    assert main([*args, "--cluster", address.format(port=port)]) == 2
    assert capsys.readouterr().err == f"batchlens: {sentence.format(port=port)}\n"
    assert not (out / "predictions.jsonl").exists()
