"""A stored crossover search is listed in the report and drawn (L* and its interval) on its speed figure."""

from ssmbench import store
from ssmbench.report.build import build_report
from ssmbench.report.searches import describe, searches_for
from ssmbench.store import CaseResult, Metric


def _summary(**kw):
    s = {"models": ["mamba", "transformer"], "answer": "crosses", "crossover_len": 1100.0, "interval": [1024, 1168],
         "faster_above": "mamba", "probes": [{"length": 1024}, {"length": 1168}], "stopped_by": "width",
         "range": [256, 4096], "note": "", "mode": "fwd", "device": "cpu", "dtype": "float32", "d_model": 256,
         "n_layers": 2, "wall_s": 80.0, "confidence": 0.99}
    return {**s, **kw}


def test_describe_and_match():
    s = _summary()
    assert "mamba is faster than transformer above L* ≈ 1.1k (interval 1k – 1.1k)" in describe(s)
    assert searches_for([s], ("fwd", "cpu", "float32", 256, 2)) == [s]
    assert searches_for([s], ("fwdbwd", "cpu", "float32", 256, 2)) == []
    never = _summary(answer="never_crosses", interval=None, crossover_len=None, faster_above="transformer",
                     note="probed up to L=4096")
    assert "never cross in 256..4k" in describe(never)
    assert searches_for([never], ("fwd", "cpu", "float32", 256, 2)) == []


def test_report_lists_and_draws_the_search(tmp_path, tiny_case):
    for length in (512, 1024, 2048):
        for model, t in (("transformer", 1e-6 * length**2 / 1100), ("mamba", 1e-6 * length)):
            store.write_case(tmp_path, "r", tiny_case(model=model, seq_len=length, batch=1, d_model=256, n_layers=2),
                             CaseResult(metrics=[Metric("time", "median", t, "s", 5), Metric("time", "q25", t, "s"),
                                                 Metric("time", "q75", t, "s"),
                                                 Metric("tokens_per_s", "median", length / t, "tok/s")],
                                        info={"backend": "x", "params": 10}))
    store.write_search(tmp_path, "xo-1", _summary())
    res = build_report(tmp_path, tmp_path / "out")
    md = res.markdown.read_text()
    assert "## Crossover searches" in md and "L* ≈ 1.1k" in md
    assert res.figures and res.figures[0].stat().st_size > 10_000


def test_every_answer_reads_as_one_sentence():
    from ssmbench.report.searches import answer_sentence

    twice = _summary(answer="crosses_more_than_once", note="also faster at 512")
    assert answer_sentence(twice).endswith(", but they cross more than once (also faster at 512)")
    tie = _summary(answer="indistinguishable", interval=None, crossover_len=None, faster_above=None, note="CI")
    assert answer_sentence(tie) == "mamba vs transformer: no length in 256..4k where either is shown faster (CI)"
    failed = _summary(answer="failed", interval=None, crossover_len=None, faster_above=None, note="oom at 256")
    assert answer_sentence(failed) == "mamba vs transformer: the search failed (oom at 256)"
    assert answer_sentence(_summary()) == "mamba is faster than transformer above L* ≈ 1.1k (interval 1k – 1.1k)"
