"""The one line printed per finished case."""

from rich.console import Console

from ssmbench.cli.common import print_outcome
from ssmbench.engine.runner import Outcome
from ssmbench.store import CaseResult, Metric


def test_a_compiled_case_with_graph_breaks_says_how_many_and_why(tiny_case):
    con = Console(record=True, width=300)
    info = {"graph_breaks": 2, "graph_break_reasons": ["Skip calling function `selective_scan_compiled`"]}
    result = CaseResult(status="ok", metrics=[Metric("time", "median", 0.002, "s", 5)], info=info)
    print_outcome(con, Outcome(tiny_case("mamba", compile="compiled"), result, 1.0))
    line = con.export_text()
    assert "mamba fwd compiled" in line and "2 graph break(s): Skip calling function `selective_scan_compiled`" in line
    con = Console(record=True, width=300)
    print_outcome(con, Outcome(tiny_case("mamba"), CaseResult(status="ok", metrics=[], info={}), 1.0))
    assert "graph break" not in con.export_text()


def test_a_decode_step_that_fell_back_to_torch_compile_says_why(tiny_case):
    con = Console(record=True, width=300)
    info = {"graph_breaks": 0, "compile_path": "torch.compile", "aot_fallback": "UserError: data-dependent branch"}
    result = CaseResult(status="ok", metrics=[Metric("time", "median", 0.0002, "s", 5)], info=info)
    print_outcome(con, Outcome(tiny_case("mamba", mode="decode", compile="compiled"), result, 1.0))
    assert "ahead-of-time compile failed: UserError: data-dependent branch" in con.export_text()
