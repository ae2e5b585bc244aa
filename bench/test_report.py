"""``bench/report.py``'s arithmetic on a made-up pytest-benchmark result."""
import report


def _bench(group, impl, median, flops=0, tokens=0, dtype=None, minimum=None):
    info = {"impl": impl, "flops": flops, "tokens": tokens}
    if dtype:
        info["dtype"] = dtype
    return {"group": group, "name": impl, "extra_info": info,
            "stats": {"median": median, "min": minimum or median}}


def _row(text, impl):
    line = next(ln for ln in text.splitlines() if ln.startswith(impl + " "))
    return line.split()


def test_table_ratios_and_roof():
    data = {"benchmarks": [
        _bench("peak-gemm", "gemm-float32", 0.02, flops=2e9, dtype="float32"),   # 100 GF/s
        _bench("peak-gemm", "gemm-float64", 0.04, flops=2e9, dtype="float64"),   # 50 GF/s
        _bench("sgd_step-T20-float64", "numpy", 0.050, flops=1e8, tokens=20),
        _bench("sgd_step-T20-float64", "numba", 0.005, flops=1e8, tokens=20, minimum=0.004),
        _bench("sgd_step-T20-float64", "blas-only", 0.004, flops=1e8, tokens=20),
        _bench("sgd_step-T20-float64", "torch", 0.010, flops=1e8, tokens=20),
        _bench("ptb-lstm-step-float32-1thread", "numba", 0.1, flops=6e9, tokens=400),
        _bench("gru-tutorial-step-float64", "numba", 0.01, tokens=23),      # no flops
        _bench("ptb-lstm-step-float32-2thread", "numba-pool", 0.05, flops=6e9, tokens=400),
    ]}
    data["benchmarks"][-1]["extra_info"]["threads"] = 2
    text = report.table(data)
    assert "[roof] square GEMM n=1024, one thread: float32 100.0 GFLOP/s, float64 50.0" in text
    assert "[peak-gemm]" not in text
    # impl, median ms, min ms, tokens/s, GFLOP/s, roof, x seed, x numpy, blas/t, x torch
    sgd = text.split("[sgd_step-T20-float64]")[1]
    assert _row(sgd, "numba") == ["numba", "5.000", "4.000", "4000", "20.0", "0.40", "-",
                                   "10.0", "0.80", "2.00"]
    ptb = text.split("[ptb-lstm-step-float32-1thread]")[1]
    assert _row(ptb, "numba")[4:6] == ["60.0", "0.60"]          # float32's roof
    two = text.split("[ptb-lstm-step-float32-2thread]")[1]
    assert _row(two, "numba-pool")[4:6] == ["120.0", "0.60"]   # two cores' roof
    gru = text.split("[gru-tutorial-step-float64]")[1]
    assert _row(gru, "numba")[5] == "-"                         # no FLOP count, no roof


def test_table_without_a_peak_run_leaves_roof_empty():
    data = {"benchmarks": [_bench("sgd_step-T20-float64", "numba", 0.005, flops=1e8,
                                  tokens=20)]}
    text = report.table(data)
    assert "[roof]" not in text
    assert _row(text, "numba")[5] == "-"
