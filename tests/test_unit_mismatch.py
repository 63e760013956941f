"""croma benchmark --resume refusing a unit file of another fingerprint says which part differs
(settings, data, croma / torch version, threads per unit), and for data computed on another CPU
why and what to do; the fingerprint itself is unchanged, so the stored unit files stay reusable."""

import json

import pytest
import torch

import croma
import croma.bench_units as bench_units
import croma.report
from croma.bench_units import Unit
from croma.errors import CromaError
from croma.unit_store import bench_digest, fingerprint_parts, finished_units, load_units, save_unit, unit_fingerprint, unit_path
from episodes.datasets.synthetic import make_synthetic_benchmark

torch.set_num_threads(1)

XEON = {"cpu": "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", "cpu_capability": "AVX512", "cpu_count": 8,
        "kernel_env": {}, "torch": "2.14.1+cu130", "torch_threads": 8, "python": "3.11.7", "platform": "Linux"}
EPYC = {**XEON, "cpu": "AMD EPYC 7B13 64-Core Processor", "cpu_capability": "AVX2"}
DIGEST = "ab" * 32
FACTS = {"evals": {1: {"accuracy_mean": 50.0}}, "eval_choice": {1: "x"}, "eval_scores": {"x": {1: 0.5}}, "seconds": 1.0}


@pytest.fixture
def versions(monkeypatch):
    """Fixed croma / torch versions and threads per unit, and a machine to run on (``here``)."""
    monkeypatch.setattr(croma, "__version__", "0.1.0")
    monkeypatch.setattr(torch, "__version__", "2.14.1+cu130")
    monkeypatch.setattr(bench_units, "UNIT_THREADS", 1)
    here = {"machine": dict(XEON)}
    monkeypatch.setattr(croma.report, "machine_info", lambda: dict(here["machine"]))
    return here


def _unit(**ctx):
    return Unit("croma", 3, ctx={"budget_steps": 200, "label_noise": 0.25, "knobs": {"lr": 0.001, "ways": (5, 3)},
                                 "hp": None, **ctx}, shots=(1, 5))


def _refusal(out, unit, fp) -> str:
    with pytest.raises(CromaError) as exc:
        load_units(out, [unit], {(unit.method, unit.seed): fp})
    msg = str(exc.value)
    assert "\n" not in msg and str(unit_path(out, unit.method, unit.seed)) in msg
    return msg


def test_the_fingerprint_is_unchanged(versions):
    # computed before the parts were kept apart: the unit files stored so far keep matching
    assert unit_fingerprint(_unit(), DIGEST) == "69ccc7be0fb7343df764abc74de9c7be487e39665b634a0df4501d7768d5b9b5"
    assert fingerprint_parts(_unit(), DIGEST) == {
        "settings": fingerprint_parts(_unit(), "cd" * 32)["settings"], "data": DIGEST, "croma": "0.1.0",
        "torch": "2.14.1+cu130", "unit_threads": 1}
    assert fingerprint_parts(_unit(label_noise=0.5), DIGEST)["settings"] != fingerprint_parts(_unit(), DIGEST)["settings"]


def test_a_unit_file_keeps_the_parts_and_a_matching_one_is_reused(tmp_path, versions):
    bench = make_synthetic_benchmark(num_classes=15, per_class=12, seed=0)
    u = _unit()
    fps, _ = finished_units(tmp_path, bench, [u])
    save_unit(tmp_path, u, fps[("croma", 3)], FACTS)
    doc = json.loads(unit_path(tmp_path, "croma", 3).read_text())
    assert doc["fingerprint_parts"] == fingerprint_parts(u, bench_digest(bench))
    assert doc["machine"]["cpu_capability"] == "AVX512"
    _, reused = finished_units(tmp_path, make_synthetic_benchmark(num_classes=15, per_class=12, seed=0), [u], resume=True)
    assert reused[("croma", 3)]["evals"] == {1: {"accuracy_mean": 50.0}}

    # other data (here: another data set) on the same machine: named, no word of CPUs
    other = make_synthetic_benchmark(num_classes=15, per_class=12, seed=1)
    with pytest.raises(CromaError, match=r"croma-seed3\.json was run with other data than this run; use another --out"):
        finished_units(tmp_path, other, [u], resume=True)


def test_data_computed_on_another_cpu_says_so(tmp_path, versions):
    u = _unit()
    save_unit(tmp_path, u, unit_fingerprint(u, DIGEST), FACTS)  # on the Xeon
    versions["machine"] = dict(EPYC)
    msg = _refusal(tmp_path, u, unit_fingerprint(u, "cd" * 32))
    assert msg == (
        f"--resume: {unit_path(tmp_path, 'croma', 3)} was run with other data than this run; it ran on Intel(R) Xeon(R) "
        "Platinum 8375C CPU @ 2.90GHz (AVX512) and this machine is AMD EPYC 7B13 64-Core Processor (AVX2): features "
        "computed on another CPU round differently, so the data differs; copy that machine's feature cache "
        "(--cache-dir, $CROMA_CACHE) here to reuse its units, or use another --out")

    # the same CPU with other kernels (ATEN_CPU_CAPABILITY=default)
    versions["machine"] = {**XEON, "cpu_capability": "DEFAULT", "kernel_env": {"ATEN_CPU_CAPABILITY": "default"}}
    msg = _refusal(tmp_path, u, unit_fingerprint(u, "cd" * 32))
    assert "this machine is Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz (DEFAULT, ATEN_CPU_CAPABILITY=default): " \
           "features computed with other CPU kernels round differently, so the data differs" in msg

    # other settings on another CPU: the data is the same, so the CPU is not the matter
    versions["machine"] = dict(EPYC)
    msg = _refusal(tmp_path, u, unit_fingerprint(_unit(label_noise=0.5), DIGEST))
    assert msg.endswith("was run with other settings than this run; use another --out, or remove that folder's "
                        "units/ to start afresh")


def test_other_versions_and_threads_are_named(tmp_path, versions, monkeypatch):
    u = _unit()
    save_unit(tmp_path, u, unit_fingerprint(u, DIGEST), FACTS)
    monkeypatch.setattr(croma, "__version__", "0.2.0")
    assert "was run with other croma version (0.1.0 → 0.2.0) than this run; use another --out" in _refusal(
        tmp_path, u, unit_fingerprint(u, DIGEST))
    monkeypatch.setattr(torch, "__version__", "2.15.0")
    monkeypatch.setattr(bench_units, "UNIT_THREADS", 2)
    assert ("was run with other data, croma version (0.1.0 → 0.2.0), torch version (2.14.1+cu130 → 2.15.0) and threads "
            "per unit (1 → 2) than this run; use another --out") in _refusal(tmp_path, u, unit_fingerprint(u, "cd" * 32))


def test_an_old_file_without_the_parts(tmp_path, versions, monkeypatch):
    u = _unit()
    save_unit(tmp_path, u, unit_fingerprint(u, DIGEST), FACTS)
    path = unit_path(tmp_path, "croma", 3)
    doc = json.loads(path.read_text())
    del doc["fingerprint_parts"]
    path.write_text(json.dumps(doc))
    # still reused when it matches
    assert ("croma", 3) in load_units(tmp_path, [u], {("croma", 3): unit_fingerprint(u, DIGEST)})
    # nothing it records differs: the wording of old
    assert _refusal(tmp_path, u, unit_fingerprint(u, "cd" * 32)) == (
        f"--resume: {path} was run with other settings, data or croma/torch version than this run; use another "
        "--out, or remove that folder's units/ to start afresh")
    # its machine ran another CPU: the data may differ
    versions["machine"] = dict(EPYC)
    msg = _refusal(tmp_path, u, unit_fingerprint(u, "cd" * 32))
    assert msg.startswith(f"--resume: {path} was run with other settings, data or croma/torch version than this run; "
                          "it ran on Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz (AVX512) and this machine is AMD ")
    assert "so the data may differ; copy that machine's feature cache (--cache-dir, $CROMA_CACHE) here" in msg
    # its machine's torch differs
    versions["machine"] = dict(XEON)
    monkeypatch.setattr(torch, "__version__", "2.15.0")
    assert _refusal(tmp_path, u, unit_fingerprint(u, DIGEST)).startswith(
        f"--resume: {path} was run with other torch version (2.14.1+cu130 → 2.15.0) than this run; use another --out")


def test_progress_of_another_fingerprint_is_named_before_it_is_replaced(tmp_path):
    """``--resume`` starts a unit afresh when its kept progress has another fingerprint (another CPU's
    features, other settings); that is said in one note instead of silently replacing hours of work."""
    from types import SimpleNamespace

    from croma.unit_partial import Partial
    from croma.unit_store import stale_note

    units = tmp_path / "units"
    state = Partial(str(units / "croma-seed0.partial.pt"), "old", resume=True)
    state.save({"step": 5})
    stages = Partial(str(units / "pretrain-seed0.partial.pt"), "old", resume=True)
    stages.keep("meta_test", "1", {"a": 1.0}, 1.0, 1.0)
    phase = Partial(str(units / "oracle-seed0.partial.pt"), "old", resume=True)
    phase.run_started("reptile", {"start_val": 1.0})
    (phase.run_folder("reptile") / "last.pt").write_bytes(b"")
    same = Partial(str(units / "shared-seed0.partial.pt"), "new", resume=True)
    same.save({"step": 1})
    torn = units / "unsup-meta-seed0.partial.pt"
    torn.write_bytes(b"not a torch file")

    def unit(method, fp):
        return SimpleNamespace(method=method, seed=0, partial=Partial(str(units / f"{method}-seed0.partial.pt"), fp,
                                                                      resume=True))

    assert [unit(m, "new").partial.stale() for m in ("croma", "pretrain", "oracle", "shared", "unsup-meta")] == [
        True, True, True, False, False]
    assert not unit("croma", "old").partial.stale()
    note = stale_note(tmp_path, [unit(m, "new") for m in ("croma", "pretrain", "oracle", "shared", "unsup-meta")])
    assert note.startswith("note: --resume: the progress kept for croma-seed0, pretrain-seed0, oracle-seed0 in ")
    assert "\n" not in note and "start afresh" in note
    assert stale_note(tmp_path, [unit("shared", "new")]) is None
