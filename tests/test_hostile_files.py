"""Hostile files and full disks (issue 21, items 2, 5, 6, 10): `croma cache clear` removes only
verified entries and never goes through a symbolic link; a cache entry is read only when it is a
regular file of bounded size; new files honour the umask; a full disk is one line naming the
file, the old file stays intact and a benchmark's results are written as one set."""

import errno
import io
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import clean_env

from croma.checkpoint import save_checkpoint
from croma.cli import error_line, main
from croma.report import write_results
from episodes.cache import FeatureCache
from episodes.cache_admin import cache_groups, clear_cache
from episodes.errors import DataError

KEY = "a" * 64
TINY = [  # a one-iteration croma train (as tests/test_cli_train.py)
    "--loss", "nce", "--quiet", "--device", "cpu", "--ways", "3", "--shots", "2", "--queries", "2",
    "--meta-batch", "4", "--inner-steps", "2", "--inner-lr", "0.01", "--embed-dim", "8", "--hidden", "16",
    "--align-batch", "8", "--eval-tasks", "2", "--finetune-steps", "2", "--seed", "1", "--iterations", "1",
    "--eval-every", "0",
]


def _entry(root, namespace="cifar-esc50/audio", key=KEY):
    fc = FeatureCache(root)
    g = torch.Generator().manual_seed(0)
    return fc.save(namespace, key, {"features": torch.randn(3, 4, generator=g), "ok": torch.ones(3, dtype=torch.bool)})


def _checkpoint_bytes():
    buf = io.BytesIO()
    torch.save({"format": "croma-checkpoint/1", "model": {"w": torch.ones(2)}, "iteration": 3}, buf)
    return buf.getvalue()


# ---------------------------------------------------------------- item 2: what cache clear touches


def test_clear_keeps_a_checkpoint_under_features(tmp_path, run_cli):
    root = tmp_path / "cache"
    entry = _entry(root)
    cut = _entry(root, key="c" * 64)
    cut.write_bytes(cut.read_bytes()[:-10])  # a truncated entry is still the cache's (its header says so)
    foreign = root / "features" / "cifar-esc50" / "audio" / "best.pt"  # someone's real checkpoint
    foreign.write_bytes(_checkpoint_bytes())
    mine = root / "features" / "my-runs" / "last.pt"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(_checkpoint_bytes())
    assert [(g.dataset, g.entries) for g in cache_groups(root)] == [("cifar-esc50", 2)]  # info counts entries only
    rc, out, err = run_cli(["cache", "clear", "--all", "--cache-dir", str(root)])
    assert rc == 0 and err == ""
    assert not entry.exists() and not cut.exists()
    assert foreign.read_bytes() == _checkpoint_bytes() and mine.read_bytes() == _checkpoint_bytes()
    assert "removed 2 file(s)" in out and f"{foreign}: not a cache entry" in out and str(mine) in out
    files, freed = clear_cache(root)  # nothing more to remove; the foreign files are still listed
    assert (files, freed) == (0, 0)


def test_clear_does_not_follow_symlinks(tmp_path, run_cli):
    outside = tmp_path / "elsewhere"
    victim = _entry(outside)  # a valid entry, but outside the cache root
    assert victim.parent.parent.parent == outside / "features"
    root = tmp_path / "cache"
    root.mkdir()
    os.symlink(outside / "features", root / "features")  # a symlinked features/
    rc, out, err = run_cli(["cache", "clear", "--all", "--cache-dir", str(root)])
    assert rc == 0 and victim.is_file() and (root / "features").is_symlink()
    assert "removed 0 file(s)" in out and f"{root / 'features'}: symbolic link to {outside / 'features'}, not followed" in out
    assert cache_groups(root) == []

    root2 = tmp_path / "cache2"
    own = _entry(root2, "cifar-esc50/image")
    os.symlink(victim, root2 / "features" / "cifar-esc50" / "image" / f"{'b' * 64}.pt")  # a symlinked entry
    os.symlink(outside / "features" / "cifar-esc50", root2 / "features" / "esc")  # a symlinked data set folder
    files, _ = cleared = clear_cache(root2)
    assert files == 1 and not own.exists() and victim.is_file()
    assert {p for p, why in cleared.skipped if "symbolic link" in why} == {
        str(root2 / "features" / "cifar-esc50" / "image" / f"{'b' * 64}.pt"), str(root2 / "features" / "esc")}


# ---------------------------------------------------------------- item 10: entries that are not regular files


_SPARSE = "fc.save('ds/audio', key, {{'x': torch.zeros(1)}}); os.truncate(entry, entry.stat().st_size + {extra})"
HOSTILE_ENTRIES = {  # how to make the entry's path hostile -> the warning (None: silently corrupt)
    "os.symlink('/dev/zero', entry)": "is a symbolic link (to /dev/zero), not a regular file",
    "os.mkfifo(entry)": "is a FIFO, not a regular file",
    _SPARSE.format(extra=17 << 30): "is 17.0 GiB, over the 16.0 GiB an entry may hold",  # sparse: no disk used
    _SPARSE.format(extra=2 << 30): None,  # longer than its header says: corrupt, like a checksum error
}


def test_entries_that_are_not_regular_bounded_files_are_not_read(tmp_path):
    """Each hostile entry is made, then ``get_or_build`` in a child with 1 GiB of data memory and a
    timeout, so that reading /dev/zero or a FIFO can neither exhaust the machine nor hang the run."""
    import resource

    code = textwrap.dedent(f"""
        import os, sys, torch
        from episodes.cache import FeatureCache
        fc = FeatureCache({str(tmp_path / 'cache')!r})
        for i, make in enumerate({list(HOSTILE_ENTRIES)!r}):
            key = str(i) * 64
            entry = fc.path("ds/audio", key)
            entry.parent.mkdir(parents=True, exist_ok=True)
            exec(make)
            out, status = fc.get_or_build("ds/audio", key, lambda: {{"x": torch.ones(2)}})
            print(status, out["x"].tolist() == [1.0, 1.0], os.path.islink(entry), fc.load("ds/audio", key) is not None,
                  entry.stat().st_size < 4096, flush=True)
            sys.stderr.write("--\\n")
    """)

    def limit():
        resource.setrlimit(resource.RLIMIT_DATA, (1 << 30, 1 << 30))

    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           preexec_fn=limit, env=clean_env())
    except subprocess.TimeoutExpired:
        pytest.fail("reading a cache entry hung")
    assert r.returncode == 0, r.stderr[-500:]
    assert r.stdout.splitlines() == ["rebuilt True False True True"] * len(HOSTILE_ENTRIES)  # replaced by real entries
    entries = [tmp_path / "cache" / "features" / "ds" / "audio" / f"{str(i) * 64}.pt" for i in range(len(HOSTILE_ENTRIES))]
    assert r.stderr.split("--\n")[:-1] == [
        "" if what is None else f"warning: feature cache entry {entry}: {what}; ignored and rebuilt\n"
        for entry, what in zip(entries, HOSTILE_ENTRIES.values())]


# ---------------------------------------------------------------- item 6: the umask


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)], ids=["umask022", "umask002"])
def test_new_files_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        run = tmp_path / "run"
        assert main(["train", "synthetic", *TINY, "--checkpoint-dir", str(run)]) == 0
        entry = _entry(tmp_path / "cache")
        results = write_results({"rows": [{"method": "croma", "shots": 1, "accuracy_mean": 50.0, "accuracy_std": 1.0,
                                           "repeats": 1, "target_samples": 0, "target_labels": 0}]}, tmp_path / "out")
    finally:
        os.umask(old)
    files = [run / "last.pt", run / "best.pt", run / "metrics.csv", entry, *results.values()]
    assert {str(f): oct(f.stat().st_mode & 0o777) for f in files} == {str(f): oct(mode) for f in files}


# ---------------------------------------------------------------- item 5: a full disk


class _FullFile:
    """A file on a disk that is full after ``room`` bytes: ``write`` raises ENOSPC from then on."""

    def __init__(self, fh, room):
        self._fh, self.room = fh, room

    def write(self, data):
        n = len(data) if isinstance(data, str) else memoryview(data).nbytes
        if n > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= n
        return self._fh.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._fh.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._fh, name)


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(*names, room=0)``: files whose name starts with one of ``names`` (or a temporary
    file of one: ``.<name>.``) get ``room`` bytes, then ENOSPC."""

    def arm(*names, room=0):
        real = os.fdopen

        def fdopen(fd, *args, **kw):
            fh = real(fd, *args, **kw)
            try:
                name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                return fh
            if any(name.startswith(n) or name.startswith(f".{n}.") for n in names):
                return _FullFile(fh, room)
            return fh

        monkeypatch.setattr(os, "fdopen", fdopen)

    return arm


def _no_temps(folder):
    return [n for n in os.listdir(folder) if n.endswith(".tmp")] == []


@pytest.mark.parametrize("room", [0, 1000])  # at once (OSError) / later (torch: RuntimeError 'unexpected pos')
def test_full_disk_checkpoint_is_one_line_and_the_old_file_stays(tmp_path, full_disk, room):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"format": "croma-checkpoint/1", "model": {"w": torch.zeros(3)}, "iteration": 1})
    before = path.read_bytes()
    full_disk("last.pt", room=room)
    with pytest.raises(OSError) as exc:
        save_checkpoint(path, {"format": "croma-checkpoint/1", "model": {"w": torch.ones(4000)}, "iteration": 2})
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(path)
    line = error_line(exc.value)
    assert line.startswith(f"cannot write {path}: no space left on device (") and " free there)" in line
    assert "\n" not in line and path.read_bytes() == before and _no_temps(tmp_path)


def test_full_disk_during_training_is_one_line(tmp_path, full_disk, run_cli):
    run = tmp_path / "run"
    full_disk("last.pt", room=500)
    rc, out, err = run_cli(["train", "synthetic", *TINY, "--checkpoint-dir", str(run)])
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: cannot write {run / 'last.pt'}: no space left on device (")
    assert not (run / "last.pt").exists() and _no_temps(run)


def test_full_disk_appending_to_metrics_csv_names_it(tmp_path):
    from croma.runlog import RunLog

    log = RunLog(tmp_path, ["iteration", "loss"])
    log.write({"iteration": 1, "loss": 0.5})
    log._fh = _FullFile(log._fh, 0)
    with pytest.raises(OSError) as exc:
        log.write({"iteration": 2, "loss": 0.25})
    assert error_line(exc.value).startswith(f"cannot write {tmp_path / 'metrics.csv'}: no space left on device (")


def test_torch_write_failure_without_a_cause_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    path.write_bytes(b"old")

    def broken_save(obj, fh, *a, **kw):
        fh.write(b"PK partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError) as exc:
        save_checkpoint(path, {"model": {}})
    line = error_line(exc.value)
    assert line.startswith(f"{path}: the write failed (torch: [enforce fail") and "unexpected pos" in line
    assert path.read_bytes() == b"old" and _no_temps(tmp_path)


def test_full_disk_cache_entry_names_it(tmp_path, full_disk):
    full_disk(f"{KEY}.pt", room=20)
    with pytest.raises(DataError, match=rf"^cannot write {tmp_path}/c/features/ds/x/{KEY}\.pt: no space left on "
                                        r"device \(.* free there\) \(the feature cache entry needs"):
        _entry(tmp_path / "c", "ds/x")
    assert _no_temps(tmp_path / "c" / "features" / "ds" / "x")


def _result(acc):
    return {"rows": [{"method": "croma", "shots": 1, "accuracy_mean": acc, "accuracy_std": 1.0, "repeats": 1,
                      "target_samples": 0, "target_labels": 0}]}


def test_results_are_written_as_one_set(tmp_path, full_disk):
    out = tmp_path / "out"
    full_disk("results.png", room=100)
    with pytest.raises(OSError) as exc:
        write_results(_result(50.0), out)
    assert error_line(exc.value).startswith(f"cannot write {out / 'results.png'}: no space left on device")
    assert os.listdir(out) == []  # no results.json / results.csv without results.png


def test_results_failure_keeps_the_earlier_set(tmp_path, monkeypatch):
    out = tmp_path / "out"
    paths = write_results(_result(50.0), out)
    before = {p: p.read_bytes() for p in paths.values()}

    import croma.report

    def no_plot(result):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # e.g. matplotlib's font cache on a full disk

    monkeypatch.setattr(croma.report, "plot_accuracy_vs_shots", no_plot)
    with pytest.raises(OSError):
        write_results(_result(75.0), out)
    assert {p: p.read_bytes() for p in paths.values()} == before and _no_temps(out)


def test_benchmark_full_disk_leaves_no_partial_results_and_keeps_finished_runs(tmp_path, full_disk, run_cli, monkeypatch):
    out = tmp_path / "new" / "out"
    args = ["benchmark", "synthetic", "--methods", "pretrain", "--budget-steps", "1", "--repeats", "1",
            "--eval-tasks", "1", "--shots", "1", "--ways", "3", "--device", "cpu", "--quiet", "--out", str(out)]
    real_fdopen = os.fdopen
    full_disk("results.png", room=100)
    rc, _, err = run_cli(args)
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: cannot write {out / 'results.png'}: no space left on device (")
    # no results file nor a temporary one; the finished (method, seed) run stays for --resume
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["units", "units/pretrain-seed0.json"]
    monkeypatch.setattr(os, "fdopen", real_fdopen)  # space again
    import croma.bench_units as bench_units

    monkeypatch.setattr(bench_units, "run_unit", lambda *a, **k: pytest.fail("a finished run ran again"))
    rc, _, err = run_cli([*args, "--resume"])
    assert rc == 0, err
    assert {"results.json", "results.csv", "results.png", "episodes.csv"} <= {p.name for p in out.iterdir()}


def test_benchmark_refused_on_its_data_leaves_no_empty_out(tmp_path, run_cli):
    out = tmp_path / "new" / "out"
    rc, _, err = run_cli(["benchmark", "synthetic", "--methods", "pretrain", "--budget-steps", "1", "--ways", "300",
                          "--device", "cpu", "--quiet", "--out", str(out)])
    assert rc == 2 and err.count("\n") == 1, err
    assert not (tmp_path / "new").exists()  # the folders the run made are gone with it
