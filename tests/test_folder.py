"""An output folder is whole or untouched: generations swapped in, write failures before any work
and as one-line errors, file modes from the umask, and loaders that refuse a mixed folder."""

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fastslow import atomic
from fastslow.cli import main
from fastslow.errors import ConfigError, WriteError

SRC = Path(__file__).resolve().parents[1] / "src"

# A different System 1 from the shared tiny fit's ([32, 16]), and only one family: a fast re-fit.
OTHER_S1 = """
policies = ["confidence"]
[system1]
epochs = 1
timesteps = 3
hidden = [32]
[system2]
epochs = 1
[confidence]
thresholds = [0.5, 0.9]
"""
# The tiny fit's System 1 architecture with another seed: files that load, but from another fit.
SAME_S1_OTHER_SEED = """
policies = ["confidence"]
seed = 1
[system1]
epochs = 1
timesteps = 3
hidden = [32, 16]
exit_heads = [0]
[system2]
epochs = 1
[confidence]
thresholds = [0.5, 0.9]
"""


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.fastslow-"))


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _fail(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def _fit_argv(out: Path, config: Path, *extra: str) -> list[str]:
    return ["fit", "--data", "digits", "--out", str(out), "--config", str(config), "--device", "cpu", "--quiet", *extra]


@pytest.fixture
def copy(fitted_folder, tmp_path):
    target = tmp_path / "report"
    shutil.copytree(fitted_folder, target)
    return target


@pytest.fixture
def other_s1(tmp_path):
    path = tmp_path / "other.toml"
    path.write_text(OTHER_S1)
    return path


# --- the generation swap itself ---------------------------------------------------------------


def _folder(tmp_path: Path) -> Path:
    target = tmp_path / "out"
    (target / "sub").mkdir(parents=True)
    for name in ("a.json", "b.json", "sub/c.json"):
        (target / name).write_text(name)
    return target


OWNS = ("a.json", "b.json", "sub", "sub/*.json")


def test_a_generation_replaces_the_whole_folder_and_leaves_no_temporary_file(tmp_path):
    target = _folder(tmp_path)
    (target / ".a.json.abc123.tmp").write_text("left by a killed write")
    (target / "sub" / f".c.json.{_dead_pid()}.x1.tmp").write_text("left by a killed write")
    with atomic.Generation(target, owns=OWNS) as staging:
        atomic.write_text(staging / "a.json", "new")
        assert target.is_dir() and (target / "b.json").is_file()  # untouched until the end
    assert _snapshot(target) == {"a.json": b"new"}
    assert not [p for p in target.rglob("*") if p.name.endswith(".tmp")] and _leftovers(target) == []


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_failure_while_writing_leaves_the_folder_exactly_as_it_was(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    target = _folder(tmp_path)
    before = _snapshot(target)
    with pytest.raises(RuntimeError), atomic.Generation(target, owns=OWNS) as staging:
        atomic.write_text(staging / "a.json", "new")
        raise RuntimeError("killed between two files")
    assert _snapshot(target) == before and _leftovers(target) == []
    with pytest.raises(WriteError, match="no space left on device: free some space, or choose another --out"):
        with atomic.Generation(target, owns=OWNS) as staging:
            atomic.write_text(staging / "a.json", "new")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert _snapshot(target) == before and _leftovers(target) == []
    with atomic.Generation(target, owns=OWNS) as staging:
        atomic.write_text(staging / "b.json", "new")
    assert _snapshot(target) == {"b.json": b"new"} and _leftovers(target) == []


def test_files_the_command_does_not_write_are_refused_not_deleted(tmp_path):
    target = _folder(tmp_path)
    (target / "notes.txt").write_text("mine")
    (target / "mine").mkdir()
    with pytest.raises(ConfigError, match=r"holds files this command does not write \(mine/, notes.txt\)"):
        atomic.Generation(target, owns=OWNS)
    assert (target / "notes.txt").read_text() == "mine"
    keep = atomic.Generation(target, keep=True)  # a command that rewrites some files keeps the others
    with keep as staging:
        atomic.write_text(staging / "a.json", "new")
    assert _snapshot(target) == {"a.json": b"new", "b.json": b"b.json", "notes.txt": b"mine", "sub/c.json": b"sub/c.json"}


def test_leftovers_of_killed_runs_are_removed_and_an_old_folder_set_aside_is_put_back(tmp_path):
    target = _folder(tmp_path)
    dead, alive = _dead_pid(), os.getppid()
    stale = tmp_path / f".out.fastslow-new-{dead}-abc"
    live = tmp_path / f".out.fastslow-new-{alive}-abc"  # another run, still going: not ours to remove
    for folder in (stale, live):
        folder.mkdir()
    with atomic.Generation(target, owns=OWNS) as staging:
        atomic.write_text(staging / "a.json", "new")
    assert not stale.exists() and live.is_dir()
    # Killed between setting the old folder aside and moving the new one in (where no atomic exchange exists).
    target.rename(tmp_path / f".out.fastslow-old-{dead}-abc")
    with atomic.Generation(target, owns=OWNS, keep=True) as staging:
        assert (staging / "a.json").read_text() == "new"  # the old generation was put back first
    assert _snapshot(target) == {"a.json": b"new"}


def test_a_link_keeps_pointing_at_the_new_folder(tmp_path):
    target = _folder(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(target)
    with atomic.Generation(link, owns=OWNS) as staging:
        atomic.write_text(staging / "a.json", "new")
    assert link.is_symlink() and _snapshot(link.resolve()) == {"a.json": b"new"}


@pytest.mark.parametrize("mask, file_mode, folder_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_outputs_get_the_mode_the_umask_gives(tmp_path, mask, file_mode, folder_mode):
    old = os.umask(mask)
    try:
        assert atomic.umask() == mask
        path = atomic.write_text(tmp_path / "one" / "file.json", "{}")
        assert stat.S_IMODE(path.stat().st_mode) == file_mode
        with atomic.Generation(tmp_path / "gen") as staging:
            atomic.write_text(staging / "sub" / "file.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "gen" / "sub" / "file.json").stat().st_mode) == file_mode
    for folder in (tmp_path / "gen", tmp_path / "gen" / "sub", tmp_path / "one"):
        assert stat.S_IMODE(folder.stat().st_mode) == folder_mode, folder


# --- fit, evaluate, calibrate, predict ----------------------------------------------------------


def test_a_refit_interrupted_mid_write_leaves_the_old_folder(copy, other_s1, monkeypatch, capsys):
    before = _snapshot(copy)

    def interrupt(path: Path) -> None:
        if path.name == "system2.safetensors":  # the new System 1 and System 2 are written, the routers not yet
            raise KeyboardInterrupt

    monkeypatch.setattr(atomic, "after_write", interrupt)
    assert main(_fit_argv(copy, other_s1)) == 130
    assert "interrupted" in capsys.readouterr().err
    monkeypatch.setattr(atomic, "after_write", None)
    assert _snapshot(copy) == before and _leftovers(copy) == []
    results = json.loads(before["results.json"])
    assert main(["evaluate", str(copy), "--quiet"]) == 0
    after = json.loads((copy / "results.json").read_text())
    assert [(s["name"], s["accuracy"]) for s in after["strategies"]] == [
        (s["name"], s["accuracy"]) for s in results["strategies"]
    ]


def test_a_refit_killed_by_sigkill_mid_write_leaves_the_old_folder(copy, other_s1):
    before = _snapshot(copy)
    script = (
        "import os, signal, sys\n"
        "from fastslow import atomic\n"
        "from fastslow.cli import main\n"
        "def kill(path):\n"
        "    if path.name == 'system2.safetensors':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "atomic.after_write = kill\n"
        f"sys.exit(main({_fit_argv(copy, other_s1)!r}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == -9, result.stderr
    assert _snapshot(copy) == before
    assert len(_leftovers(copy)) == 1  # the half-built new generation, beside the folder, never in it
    assert main(["evaluate", str(copy), "--quiet"]) == 0  # and the next writer removes it
    assert _leftovers(copy) == []


@pytest.fixture(scope="module")
def refitted(fitted_folder, tmp_path_factory):
    """The shared tiny fit copied, given leftovers of killed runs, and re-fitted over (another seed,
    one family: fewer files than the old fit)."""
    root = tmp_path_factory.mktemp("refit")
    target = root / "report"
    shutil.copytree(fitted_folder, target)
    (target / "calibration.json").write_text("{}")
    (target / ".results.json.abc123.tmp").write_text("left by an older fastslow")
    (target / "checkpoints" / f".policy-001.json.{_dead_pid()}.x1.tmp").write_text("left by a killed write")
    (root / f".report.fastslow-new-{_dead_pid()}-abc").mkdir()
    config = root / "other.toml"
    config.write_text(SAME_S1_OTHER_SEED)
    old = _snapshot(target)
    assert main(_fit_argv(target, config)) == 0
    return target, old


def test_a_refit_leaves_only_the_new_fits_files(refitted):
    target, old = refitted
    manifest = json.loads((target / "checkpoints" / "manifest.json").read_text())
    new = {"config.json", "results.json", "report.md", "pareto.png", "timesteps.png", "checkpoints/manifest.json"}
    new |= {f"checkpoints/{name}" for name in manifest["files"]}
    assert set(_snapshot(target)) == new and _leftovers(target) == []
    assert len(old) > len(new) + 10  # the old fit's routers, calibration and temporary files are gone
    assert all(name.endswith((".json", ".safetensors")) and f"checkpoints/{name}" in old for name in manifest["files"])
    assert json.loads((target / "results.json").read_text())["generation"] == manifest["generation"]
    mode = 0o666 & ~atomic.umask()
    assert {stat.S_IMODE(p.stat().st_mode) for p in target.rglob("*") if p.is_file()} == {mode}
    assert main(["evaluate", str(target), "--quiet"]) == 0


def test_a_checkpoint_from_another_fit_is_refused_naming_it(refitted, copy, capsys):
    other, _ = refitted
    shutil.copy(other / "checkpoints" / "system1.safetensors", copy / "checkpoints" / "system1.safetensors")
    message = _fail(capsys, ["evaluate", str(copy), "--quiet"])
    assert "system1.safetensors" in message and "copied from another fit" in message and "policy-" not in message
    assert "system1.safetensors" in _fail(
        capsys, ["predict", str(copy), "--strategy", "system1", "--out", str(copy.parent / "p")]
    )


def test_an_edited_config_json_is_refused_and_run_time_keys_may_change(copy, capsys):
    path = copy / "config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "system1": {**config["system1"], "hidden": [32]}}))
    message = _fail(capsys, ["evaluate", str(copy), "--quiet"])
    assert (
        "config.json was edited after the fit: system1.hidden is [32] there but the checkpoints were fit with [32, 16]" in message
    )
    assert "re-fit, or restore it" in message
    path.write_text(json.dumps({**config, "profile": "loihi", "eval_batch_size": 100}))
    assert main(["evaluate", str(copy), "--quiet"]) == 0
    assert json.loads((copy / "results.json").read_text())["profile"]["name"] == "loihi"


def test_evaluate_rewrites_its_folder_as_a_generation_and_keeps_the_rest(copy, monkeypatch, capsys):
    (copy / "notes.txt").write_text("mine")
    before = _snapshot(copy)

    def interrupt(path: Path) -> None:
        if path.name == "pareto.png":
            raise KeyboardInterrupt

    monkeypatch.setattr(atomic, "after_write", interrupt)
    assert main(["evaluate", str(copy), "--profile", "loihi", "--quiet"]) == 130
    monkeypatch.setattr(atomic, "after_write", None)
    assert _snapshot(copy) == before and _leftovers(copy) == []
    assert main(["evaluate", str(copy), "--profile", "loihi", "--quiet"]) == 0
    after = _snapshot(copy)
    assert set(after) == set(before) and after["notes.txt"] == b"mine"
    assert all(after[name] == before[name] for name in before if name.startswith("checkpoints/"))
    assert json.loads(after["results.json"])["profile"]["name"] == "loihi"


def test_a_full_disk_during_a_refit_is_one_line_and_leaves_the_old_folder(copy, other_s1, monkeypatch, capsys):
    before = _snapshot(copy)
    write = atomic.write_bytes

    def full(path, data):
        if Path(path).name == "system2.safetensors":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return write(path, data)

    monkeypatch.setattr(atomic, "write_bytes", full)
    message = _fail(capsys, _fit_argv(copy, other_s1))
    assert message == f"error: cannot write to {copy}: no space left on device: free some space, or choose another --out"
    assert _snapshot(copy) == before and _leftovers(copy) == []


def test_calibrate_writes_one_file_and_removes_only_dead_writers_leftovers(copy, monkeypatch, capsys):
    stale = copy / f".calibration.json.{_dead_pid()}.x1.tmp"
    live = copy / f".calibration.json.{os.getppid()}.x2.tmp"
    stale.write_text("")
    live.write_text("")
    before = _snapshot(copy)
    write = atomic.write_bytes

    def full(path, data):
        if Path(path).name == "calibration.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return write(path, data)

    monkeypatch.setattr(atomic, "write_bytes", full)
    argv = ["calibrate", str(copy), "--max-accuracy-drop", "0.05", "--quiet"]
    assert "no space left on device" in _fail(capsys, argv)
    assert _snapshot(copy) == before
    monkeypatch.setattr(atomic, "write_bytes", write)
    assert main(argv) == 0
    generation = json.loads((copy / "checkpoints" / "manifest.json").read_text())["generation"]
    assert json.loads((copy / "calibration.json").read_text())["generation"] == generation
    assert not stale.exists() and live.exists()


# --- read-only folders: as root, the override that ignores file modes is dropped ------------------


def _without_root_override() -> list[str]:
    """A command prefix under which file modes bind (root drops CAP_DAC_OVERRIDE), or skip."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv is missing: a read-only folder cannot be made to bind")
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"running as root and setpriv cannot drop the override here: {probe.stderr.decode().strip()}")
    return prefix


def test_read_only_folders_fail_before_any_work_with_one_line(copy, tmp_path):
    prefix = _without_root_override()
    locked = tmp_path / "locked"
    locked.mkdir()
    (copy.parent / "preds").mkdir()
    folders = [locked, copy, copy / "checkpoints"]
    cases = {
        "fit into a read-only folder": ["fit", "--data", "digits", "--out", str(locked / "report"), "--quiet"],
        "re-fit a read-only report": ["fit", "--data", "digits", "--out", str(copy), "--quiet"],
        "evaluate": ["evaluate", str(copy), "--quiet"],
        "calibrate": ["calibrate", str(copy), "--quiet"],
        "predict": ["predict", str(copy), "--strategy", "system1", "--out", str(locked / "preds"), "--quiet"],
    }
    script = (
        "import contextlib, io, json, sys, time\n"
        "from fastslow.cli import main\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    err = io.StringIO()\n"
        "    started = time.perf_counter()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        code = main(argv)\n"
        "    print(json.dumps([code, err.getvalue(), time.perf_counter() - started]))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    before = _snapshot(copy)
    for folder in folders:
        folder.chmod(0o555)
    try:
        result = subprocess.run(
            [*prefix, sys.executable, "-c", script, json.dumps(list(cases.values()))],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        for folder in folders:
            folder.chmod(0o755)
    assert result.returncode == 0, result.stderr
    for name, line in zip(cases, result.stdout.splitlines(), strict=True):
        code, err, seconds = json.loads(line)
        assert code == 2 and err.count("\n") == 1, (name, err)
        assert err.startswith("error: cannot write to ") and "permission denied" in err, (name, err)
        # Before loading data or training: no progress line came (the output is one JSON line per case),
        # and only the first case's imports took seconds (a loaded 2-core machine takes ~5 s for torch's).
        assert seconds < 15, (name, seconds)
    assert _snapshot(copy) == before and list(locked.iterdir()) == []
