"""``reconciler watch --all-envs``: one daemon, one models.d, two local registries on loopback,
each accepting only its own key. A file edit reaches every environment (with its overlay),
drift is undone where it happened, one registry down leaves the other converging, and readiness,
/status, /metrics and the page speak per environment.

Every wait is a condition polled until a deadline, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from conftest import API_PREFIX, Receiver, RunningRegistry
from prometheus_client.parser import text_string_to_metric_families
from test_daemon import DaemonProcess, wait_for
from test_environments import Setup, live, model_toml, statuses

from reconciler.daemon.files import ModelFiles
from reconciler.daemon.fleet import SharedFiles


def save(path: Path, text: str) -> None:
    """Save the way editors do: a temp file beside it, then an atomic rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class EnvWatcher(DaemonProcess):
    """``reconciler watch`` over the environments of ``setup``, as a subprocess."""

    def __init__(self, setup: Setup, log: Path, *args: str, env: dict[str, str]) -> None:
        super().__init__(log)
        self.setup = setup
        argv = ["--dir", str(setup.models), "--listen", f"127.0.0.1:{self.port}"]
        argv += ["--resync-interval", "1", "--health-interval", "0", "--timeout", "2", *args]
        self.launch(argv, setup.env(**env), setup.root)  # reconciler.toml is found there

    def ready(self, path: str = "/readyz") -> int:
        return self.http.get(path).status_code

    def env_status(self, name: str) -> dict[str, Any]:
        return next(e for e in self.status()["environments"] if e["name"] == name)

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = self.http.get("/metrics").text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


@pytest.fixture
def setup(tmp_path: Path, registry_factory: Callable[..., RunningRegistry]) -> Setup:
    return Setup(tmp_path, {"dev": registry_factory(), "prod": registry_factory()})


@pytest.fixture
def watch(setup: Setup, tmp_path: Path) -> Iterator[Callable[..., EnvWatcher]]:
    started: list[EnvWatcher] = []

    def start(*args: str, **env: str) -> EnvWatcher:
        w = EnvWatcher(setup, tmp_path / f"daemon-{len(started)}.log", *args, env=env)
        started.append(w)
        return w

    yield start
    for w in started:
        w.close()


def rpm(registry: RunningRegistry, model_id: str) -> int | None:
    return live(registry).get(model_id, {}).get("rpm")


def no_key_refused(registry: RunningRegistry) -> bool:
    """Each registry accepts only its own key: another key would have been logged as 401."""
    seen = statuses(registry)
    return bool(seen) and all(s < 400 for s in seen)


def test_an_edit_reaches_every_environment_with_its_own_overlay(
    setup: Setup, watch: Callable[..., EnvWatcher]
):
    setup.config({"prod": 'overlay = "overlays/prod"\n'})
    setup.overlay("prod", "env-a.toml", 'id = "meetkai:env-a"\ncontextWindow = 32768\n')
    setup.overlay("prod", "env-c.toml", 'id = "meetkai:env-c"\nexclude = true\n')
    dev, prod = setup.registries["dev"], setup.registries["prod"]
    w = watch("--all-envs")
    wait_for("every environment ready", lambda: w.ready() == 200)
    assert set(live(dev)) == {"meetkai:env-a", "meetkai:env-b", "meetkai:env-c"}
    assert set(live(prod)) == {"meetkai:env-a", "meetkai:env-b"}  # env-c left out of prod
    assert live(dev)["meetkai:env-a"]["contextWindow"] == 8192
    assert live(prod)["meetkai:env-a"]["contextWindow"] == 32768

    # One save re-plans that id in every environment, each with its overlay applied.
    save(setup.models / "meetkai_env-a.toml", model_toml("meetkai:env-a", "rpm = 7"))
    wait_for("the edit in dev", lambda: rpm(dev, "meetkai:env-a") == 7)
    wait_for("the edit in prod", lambda: rpm(prod, "meetkai:env-a") == 7)
    assert live(dev)["meetkai:env-a"]["contextWindow"] == 8192
    assert live(prod)["meetkai:env-a"]["contextWindow"] == 32768
    # A new file too; the model prod's overlay leaves out stays out of prod.
    save(setup.models / "meetkai_env-d.toml", model_toml("meetkai:env-d"))
    save(setup.models / "meetkai_env-c.toml", model_toml("meetkai:env-c", "rpm = 3"))
    wait_for("the new model in prod", lambda: "meetkai:env-d" in live(prod))
    wait_for("the new model and the edit in dev", lambda: rpm(dev, "meetkai:env-c") == 3)
    assert "meetkai:env-d" in live(dev) and "meetkai:env-c" not in live(prod)
    # An overlay edit lands in its environment alone.
    setup.overlay("prod", "env-b.toml", 'id = "meetkai:env-b"\nrpm = 11\n')
    wait_for("the overlay edit in prod", lambda: rpm(prod, "meetkai:env-b") == 11)
    assert rpm(dev, "meetkai:env-b") is None
    # A broken overlay holds its model back in its environment alone, named on /status.
    setup.overlay("prod", "env-b.toml", 'id = "meetkai:env-b"\nrpm = "many"\n')

    def held_back() -> dict[str, Any] | None:
        prod_doc = w.env_status("prod")
        rows = {m["id"]: m for m in prod_doc["models"]}
        return prod_doc if rows["meetkai:env-b"]["state"] == "invalid" else None

    prod_doc = wait_for("env-b held back in prod", held_back)
    assert [f["file"] for f in prod_doc["invalid_files"]] == ["overlays/prod/env-b.toml"]
    assert "rpm" in prod_doc["invalid_files"][0]["error"]
    assert w.env_status("dev")["invalid_files"] == []
    assert rpm(prod, "meetkai:env-b") == 11  # nothing written for it
    setup.overlay("prod", "env-b.toml", 'id = "meetkai:env-b"\nrpm = 11\n')
    wait_for("env-b back in prod", lambda: not held_back())

    doc = w.status()
    assert doc["ready"] is True and doc["reason"] is None
    assert [e["name"] for e in doc["environments"]] == ["dev", "prod"]
    by_env = {e["name"]: {m["id"]: m["state"] for m in e["models"]} for e in doc["environments"]}
    assert set(by_env["dev"]) == {f"meetkai:env-{x}" for x in "abcd"}
    assert "meetkai:env-c" not in by_env["prod"] and by_env["prod"]["meetkai:env-a"] == "synced"
    assert doc["environments"][1]["registry"]["url"] == prod.url
    assert w.ready("/readyz/dev") == 200 and w.ready("/readyz/prod") == 200
    assert w.ready("/readyz/qa") == 404

    samples = w.samples()
    assert samples and all(
        dict(labels).get("environment") in ("dev", "prod") for _, labels in samples
    )
    for name in ("dev", "prod"):
        assert samples[("reconciler_ready", (("environment", name),))] == 1
    labels = (("action", "create"), ("environment", "prod"), ("outcome", "ok"))
    created = ("reconciler_writes_total", labels)
    assert samples[created] == 3  # a, b, d: c is left out

    for registry in (dev, prod):
        assert no_key_refused(registry), registry.stderr()
    for key in (dev.api_key, prod.api_key, "the-wrong-key"):
        assert key not in w.output() and key not in w.http.get("/").text


@pytest.mark.browser
def test_the_status_page_has_a_section_per_environment(
    setup: Setup, watch: Callable[..., EnvWatcher], tmp_path: Path
):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI")
        pytest.skip("chromium is not installed")
    setup.config({"prod": 'overlay = "overlays/prod"\n'})
    setup.overlay("prod", "env-c.toml", 'id = "meetkai:env-c"\nexclude = true\n')
    w = watch("--all-envs")
    wait_for("every environment ready", lambda: w.ready() == 200)
    with tempfile.TemporaryDirectory(dir=tmp_path) as profile:
        result = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                f"--user-data-dir={profile}",
                "--enable-logging=stderr",  # the page's script errors, if any
                "--virtual-time-budget=5000",  # two refreshes from /status
                "--dump-dom",
                f"http://127.0.0.1:{w.port}/",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert "Uncaught" not in result.stderr, result.stderr[-2000:]
    dom = result.stdout.split("<script>")[0]
    sections = dom.split('<section class="registry">')[1:]
    assert len(sections) == 2, result.stderr[-2000:]
    assert "<h2>dev</h2>" in sections[0] and "<h2>prod</h2>" in sections[1]
    rows = [re.findall(r'<tr class="model" data-id="([^"]+)">', s) for s in sections]
    assert rows == [
        ["meetkai:env-a", "meetkai:env-b", "meetkai:env-c"],
        ["meetkai:env-a", "meetkai:env-b"],
    ]
    assert f"registry {setup.registries['prod'].url} up" in sections[1]
    assert '<div id="overall"><span class="ok">ready</span></div>' in dom


def test_drift_in_one_environment_is_undone_there_alone(
    setup: Setup, watch: Callable[..., EnvWatcher], receiver: Receiver
):
    # prod's overlay fills a value from a variable: it must never be shown.
    setup.config({"prod": 'overlay = "overlays/prod"\n'}, top='allow_env = ["PROD_HOST"]\n')
    setup.overlay("prod", "a.toml", 'id = "meetkai:env-a"\nbaseUrl = "https://${PROD_HOST}/v1"\n')
    dev, prod = setup.registries["dev"], setup.registries["prod"]
    w = watch(
        "--env", "dev", "--env", "prod", "--notify", receiver.url,
        PROD_HOST="prod-host-not-shown.example",
    )  # fmt: skip
    wait_for("every environment ready", lambda: w.ready() == 200)
    assert live(prod)["meetkai:env-a"]["baseUrl"] == "https://prod-host-not-shown.example/v1"
    dev_writes = dev.counts()["writes"]

    with httpx.Client(
        base_url=prod.url + API_PREFIX,
        headers={"Authorization": f"Bearer {prod.api_key}"},
        trust_env=False,
    ) as api:
        drifted = {"rpm": 999, "baseUrl": "https://elsewhere.example/v1"}
        api.patch("/" + quote("meetkai:env-a", safe=""), json=drifted).raise_for_status()
    assert rpm(prod, "meetkai:env-a") == 999
    wait_for("the drift undone in prod", lambda: rpm(prod, "meetkai:env-a") is None)
    assert live(prod)["meetkai:env-a"]["baseUrl"] == "https://prod-host-not-shown.example/v1"
    drift = ("reconciler_drift_corrected_total", (("environment", "prod"), ("id", "meetkai:env-a")))
    wait_for("the drift counted in prod", lambda: w.samples().get(drift) == 1)
    samples = w.samples()
    assert samples[drift[0], (("environment", "dev"), ("id", "meetkai:env-a"))] == 0
    assert dev.counts()["writes"] == dev_writes  # nothing written to dev
    assert "drift corrected environment=prod id=meetkai:env-a" in w.output()
    (note,) = wait_for("the drift notified", lambda: receiver.events("drift-corrected"))
    assert note["environment"] == "prod" and note["id"] == "meetkai:env-a"
    assert note["fields"] == ["baseUrl", "rpm"]  # the paths, never a value
    assert "baseUrl" in w.output()  # the write is logged field by field...
    shown = [
        w.output(),
        w.http.get("/").text,
        w.http.get("/status").text,
        w.http.get("/metrics").text,
        str(receiver.events()),
    ]
    assert not any("prod-host-not-shown" in text for text in shown)  # ...its value never


def test_one_registry_down_while_the_other_converges(
    setup: Setup, watch: Callable[..., EnvWatcher]
):
    setup.config()
    dev, prod = setup.registries["dev"], setup.registries["prod"]
    w = watch("--all-envs")
    wait_for("every environment ready", lambda: w.ready() == 200)

    prod.stop()
    wait_for("not ready while prod is down", lambda: w.ready() == 503)
    save(setup.models / "meetkai_env-b.toml", model_toml("meetkai:env-b", "rpm = 5"))
    wait_for("the edit in dev", lambda: rpm(dev, "meetkai:env-b") == 5)
    reason = w.http.get("/readyz").text
    assert reason.startswith("not ready: prod: ") and "dev" not in reason
    assert w.ready("/readyz/dev") == 200 and w.ready("/readyz/prod") == 503
    assert w.env_status("dev")["ready"] and not w.env_status("prod")["registry"]["up"]

    prod.start()
    wait_for("ready again", lambda: w.ready() == 200, 20)
    wait_for("the edit made while prod was down", lambda: rpm(prod, "meetkai:env-b") == 5)
    for registry in (dev, prod):
        assert no_key_refused(registry), registry.stderr()


def test_watch_needs_an_environment_named_or_all(setup: Setup, run_cli: Callable[..., Any]):
    setup.config()
    for args, expected in (
        ((), "dev, prod"),
        (("--env", "qa"), "unknown environment 'qa'"),
        (("--all-envs", "--registry-url", "http://127.0.0.1:9"), "--registry-url"),
    ):
        result = run_cli(
            "watch", "--dir", str(setup.models), *args, env=setup.env(), cwd=setup.root
        )
        assert result.returncode == 1
        assert expected in result.stderr


# --- the files are read once, for every environment ----------------------------------------


class CountingFiles(ModelFiles):
    def __init__(self, root: Path) -> None:
        super().__init__(root, lambda: self, workers=1)  # its own (no-op) event sink
        self.reads: list[str] = []

    def emit(self, event: object) -> None:
        pass

    async def _load(self, paths: list[str]) -> Any:
        self.reads.extend(os.path.basename(p) for p in paths)
        return await super()._load(paths)


class Noticed:
    """Stands for a daemon: what it was told changed, and why it was asked to resync."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.fulls: list[str] = []

    def notice(self, paths: Any) -> None:
        self.paths.extend(paths)

    def request_full(self, reason: str) -> None:
        self.fulls.append(reason)


@pytest.mark.anyio
async def test_a_change_is_read_once_and_every_environment_sees_it(tmp_path: Path):
    a = tmp_path / "a.toml"
    a.write_text(model_toml("team:a"))
    files = CountingFiles(tmp_path)
    shared = SharedFiles(files)
    views = [shared.view() for _ in range(3)]
    daemons = [Noticed() for _ in views]
    for view, daemon in zip(views, daemons, strict=True):
        shared.attach(view, daemon)  # type: ignore[arg-type]

    assert await views[0].rescan(()) == {str(a)}  # the first full resync reads it...
    assert files.reads == ["a.toml"]
    assert await views[1].rescan(()) == {str(a)}  # ...the others are told, and read nothing
    assert await views[2].rescan(()) == {str(a)}
    assert files.reads == ["a.toml"]
    assert daemons[1].fulls == daemons[2].fulls == ["files changed"] and daemons[0].fulls == []

    # The watcher names a file whose id changed: read once; each environment plans both ids.
    save(a, model_toml("team:renamed"))
    reader = asyncio.create_task(shared.reader())
    try:
        shared.notice([str(a)])
        for _ in range(500):
            if all(d.paths for d in daemons):
                break
            await asyncio.sleep(0.01)
    finally:
        reader.cancel()
    assert files.reads == ["a.toml", "a.toml"]
    for view, daemon in zip(views, daemons, strict=True):
        assert daemon.paths == [str(a)]
        assert await view.refresh([str(a)]) == {"team:a", "team:renamed"}
        assert len(view) == 1 and set(view.models) == {"team:renamed"}
    assert files.reads == ["a.toml", "a.toml"]


class FailingOnce(CountingFiles):
    async def refresh(self, paths: Any) -> set[str]:
        if not self.reads:
            self.reads.append("boom")
            raise RuntimeError("a bug")
        return await super().refresh(paths)


@pytest.mark.anyio
async def test_a_read_that_fails_makes_every_environment_rescan_and_reading_goes_on(
    tmp_path: Path,
):
    a = tmp_path / "a.toml"
    a.write_text(model_toml("team:a"))
    shared = SharedFiles(FailingOnce(tmp_path))
    daemons = [Noticed(), Noticed()]
    for daemon in daemons:
        shared.attach(shared.view(), daemon)  # type: ignore[arg-type]
    reader = asyncio.create_task(shared.reader())
    try:
        shared.notice([str(a)])
        for _ in range(500):
            if all(d.fulls for d in daemons):
                break
            await asyncio.sleep(0.01)
        assert [d.fulls for d in daemons] == [["reading the changed files failed"]] * 2
        shared.notice([str(a)])  # the reader is still there
        for _ in range(500):
            if all(d.paths for d in daemons):
                break
            await asyncio.sleep(0.01)
        assert [d.paths for d in daemons] == [[str(a)]] * 2
    finally:
        reader.cancel()


# --- an environment's overlay, applied to a full plan and to one changed id ----------------


def test_an_overlay_changes_excludes_and_fails_by_id(tmp_path: Path, monkeypatch):  # type: ignore[no-untyped-def]
    from reconciler.daemon.overlays import NO_OVERLAY, EnvOverlay
    from reconciler.source import LoadPolicy, load_dir

    models, overlays = tmp_path / "models.d", tmp_path / "overlays"
    models.mkdir()
    overlays.mkdir()
    for name in ("a", "b", "c"):
        (models / f"team_{name}.toml").write_text(model_toml(f"team:{name}"))
    (overlays / "a.toml").write_text('id = "team:a"\nbaseUrl = "https://${PROD_HOST}/v1"\n')
    (overlays / "c.toml").write_text('id = "team:c"\nexclude = true\n')
    (overlays / "z.toml").write_text('id = "team:z"\ncontextWindow = 1\n')
    monkeypatch.setenv("PROD_HOST", "prod-host.example")
    policy = LoadPolicy(allow_env=("PROD_HOST",))
    load = load_dir(models, policy=policy)
    overlay = EnvOverlay(overlays, policy)

    state = overlay.everything(load)
    desired, invalid = state.models, state.invalid_ids
    assert desired["team:a"].body["baseUrl"] == "https://prod-host.example/v1"
    assert "team:c" not in desired and not overlay.keeps("team:c") and overlay.keeps("team:a")
    assert invalid == {"team:z": str(overlays / "z.toml")}  # no model file declares it
    assert overlay.failed_files == 1 and state.failed_files == 1  # fences prune
    assert "no model file declares id 'team:z'" in (overlay.first_error(invalid["team:z"]) or "")
    assert overlay.hidden("team:a") == {"https://prod-host.example/v1"}  # filled from a variable
    assert set(NO_OVERLAY.everything(load).models) == {"team:a", "team:b", "team:c"}

    # One changed id is planned alone: team:z's file appears, and its overlay now applies.
    (models / "team_z.toml").write_text(model_toml("team:z"))
    load = load_dir(models, policy=policy)
    few = overlay.subset(load.subset({"team:z"}), {"team:z"})
    assert few.models["team:z"].body["contextWindow"] == 1 and few.invalid_ids == {}
    assert overlay.failed_files == 0 and overlay.first_error(str(overlays / "z.toml")) is None


# --- on fake time: each environment keeps its own timers -------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_registry_down_is_retried_on_its_own_backoff_the_other_keeps_its_interval(
    tmp_path: Path, registry_factory: Callable[..., Any]
):
    import io
    import logging

    from daemon_harness import JITTER, RESYNC, Harness, InstantClock

    from reconciler import daemon as daemon_mod
    from reconciler.clock import FakeClock
    from reconciler.daemon.logs import setup as log_setup
    from reconciler.environments import Environment
    from reconciler.reconcile import Target

    models = tmp_path / "models.d"
    models.mkdir()
    save(models / "team_a.toml", model_toml("team:a"))
    dev, prod = registry_factory(), registry_factory()
    envs = [
        Environment(name, Target(r.url, r.api_key), f"{name.upper()}_KEY")
        for name, r in (("dev", dev), ("prod", prod))
    ]
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    log = log_setup("json", stream)
    clock = FakeClock()
    options = daemon_mod.Options(directory=models, health_interval=0)
    fleet = daemon_mod.assemble_envs(options, envs, log, clock=clock, registry_clock=InstantClock())
    hs = {
        m.name: Harness(m.daemon, clock, r, stream)
        for m, r in zip(fleet.members, (dev, prod), strict=True)
    }
    task = asyncio.create_task(daemon_mod.serve(fleet, None, None, signals=False))

    async def step() -> float:
        """Fire the next timer of either environment; every daemon idle before and after."""
        for h in hs.values():
            await h.settle()
        moment = clock.next_deadline()
        assert moment is not None
        await clock.advance_to(moment)
        for h in hs.values():
            await h.settle()
        return moment

    try:
        await hs["dev"].until("both ready", lambda: fleet.ready)
        prod.stop()
        runs = len(hs["prod"].run_at)
        while len(hs["prod"].run_at) < runs + 9:  # its resync finds it down, then 8 retries
            await step()
            assert hs["dev"].daemon.readiness.ready  # dev never notices prod's outage
        gaps = {
            n: [b - a for a, b in zip(h.run_at, h.run_at[1:], strict=False)] for n, h in hs.items()
        }
        # dev: its resync interval (+-10%), nothing else; prod: 0.5 s doubling up to 30 s.
        assert gaps["dev"] and all(RESYNC * 0.9 <= g <= RESYNC * JITTER for g in gaps["dev"])
        assert gaps["prod"][-8:] == pytest.approx([0.5, 1, 2, 4, 8, 16, 30, 30])
        assert not hs["prod"].daemon.readiness.ready and not fleet.ready
        prod.start()
        for _ in range(5):  # its next retry, within 30 s, finds it back
            if fleet.ready:
                break
            await step()
        assert fleet.ready and clock.monotonic() - hs["prod"].run_at[-2] <= 30
    finally:
        fleet.stop()
        try:
            async with asyncio.timeout(15):
                assert await task == 0
        finally:
            for h in hs.values():
                await h.web.aclose()
                await h.api.aclose()
            root.handlers[:], _ = saved
            root.setLevel(saved[1])
