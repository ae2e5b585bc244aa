"""Run the benchmarks and print ratios, not just times.

    python bench/report.py [pytest-benchmark JSON]    # runs the suite when no file is given

For every group (op x length x dtype) prints each implementation's median time, tokens/s,
GFLOP/s of the big products, the speed-up over the tutorial's own loop (``seed-loop``) and
over the NumPy reference (``numpy``), against each peer present in the group
(``x torch`` = PyTorch's time / this time, likewise JAX and PyTensor), and the fraction of the ``blas-only`` time (the
products alone at the same shapes, measured in the same run): 1.00 would mean everything
besides the GEMMs is free.  Ratios use medians; the minimum is printed beside the median
because on a shared machine a burst of load during one implementation's rounds moves its median
(the minimum is what the code does when it has the core to itself).  ``roof`` is GFLOP/s as a
fraction of the square matrix product's on one thread in the same run and dtype
(``bench/test_bench_peak.py``, group ``peak-gemm``), times the row's thread count: the share
of the cores' reachable peak that the step's arithmetic runs at.
"""
import json
import os
import subprocess
import sys
import tempfile


def run_suite(path, extra=()):
    here = os.path.dirname(os.path.abspath(__file__))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", here,
           "--benchmark-only", f"--benchmark-json={path}", *extra]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def _dtype(group, rows):
    for r in rows:
        if r["extra_info"].get("dtype"):
            return r["extra_info"]["dtype"]
    for dt in ("float32", "float64"):
        if dt in group:
            return dt
    return None


def peaks(groups):
    """``{dtype: GFLOP/s}`` of the square product (median time), if it was run."""
    out = {}
    for r in groups.get("peak-gemm", []):
        info = r["extra_info"]
        out[info["dtype"]] = info["flops"] / r["stats"]["median"] / 1e9
    return out


def table(data):
    groups = {}
    for b in data["benchmarks"]:
        groups.setdefault(b["group"] or "", []).append(b)
    roof = peaks(groups)
    lines = []
    if roof:
        lines.append("\n[roof] square GEMM n=1024, one thread: "
                     + ", ".join(f"{dt} {gf:.1f} GFLOP/s" for dt, gf in sorted(roof.items())))
    for name in sorted(groups):
        rows = groups[name]
        if name == "peak-gemm":
            continue
        peak = roof.get(_dtype(name, rows))
        by_impl = {r["extra_info"].get("impl", r["name"]): r for r in rows}
        if name == "compile":
            for r in rows:
                info = r["extra_info"]
                nan = float("nan")
                lines.append(f"\n[start-up] import fastrnn + first tutorial sgd_step: cold (empty cache, "
                             f"compiles) {info.get('cold_import_s', nan):.2f} s; warm (on-disk cache) "
                             f"{info.get('warm_import_s', nan):.2f} s = numba {info.get('warm_numba_s', nan):.2f}"
                             f" + fastrnn {info.get('warm_fastrnn_s', nan):.2f} + first step "
                             f"(BLAS lookup, kernel load) {info.get('warm_first_step_s', nan):.2f}"
                             f"{'; SciPy BLAS imported' if info.get('scipy_linalg') else ''}")
                if "cython_start_s" in info:
                    lines.append(f"[start-up] the same with backend='cython': "
                                 f"{info['cython_start_s']:.2f} s (Numba imported: "
                                 f"{info['cython_numba']})")
                if "numba_floor_s" in info:
                    lines.append(f"[start-up] Numba's floor (import numba + one trivial cached "
                                 f"function): {info['numba_floor_s']:.2f} s")
            continue
        med = {k: r["stats"]["median"] for k, r in by_impl.items()}
        seed = med.get("seed-loop")
        ref = med.get("numpy")
        blas = med.get("blas-only")
        peers = [p for p in ("torch", "jax", "pytensor") if p in med]
        lines.append(f"\n[{name}]")
        lines.append(f"{'impl':<12}{'median ms':>11}{'min ms':>9}{'tokens/s':>12}{'GFLOP/s':>9}"
                     f"{'roof':>6}{'x seed':>9}{'x numpy':>9}{'blas/t':>8}"
                     + "".join(f"{'x ' + p:>11}" for p in peers))
        for impl, r in sorted(by_impl.items(), key=lambda kv: -kv[1]["stats"]["median"]):
            t = med[impl]
            info = r["extra_info"]
            tok = info.get("tokens", 0) / t if t else float("nan")
            gf = info.get("flops", 0) / t / 1e9 if t else float("nan")
            # the roof of as many cores as the row ran on (the square product on one thread
            # times its thread count: the cores' sum, which no product reaches in practice)
            cores = info.get("threads") or 1
            rf = f"{gf / (peak * cores):6.2f}" if peak and info.get("flops") else f"{'-':>6}"
            xs = f"{seed / t:9.1f}" if seed else f"{'-':>9}"
            xn = f"{ref / t:9.1f}" if ref else f"{'-':>9}"
            fr = f"{blas / t:8.2f}" if blas else f"{'-':>8}"
            xp = "".join(f"{med[p] / t:11.2f}" for p in peers)
            tmin = r["stats"]["min"]
            lines.append(f"{impl:<12}{t * 1e3:11.3f}{tmin * 1e3:9.3f}{tok:12.0f}{gf:9.1f}{rf}{xs}{xn}"
                         f"{fr}{xp}")
    return "\n".join(lines)


def main(argv):
    if argv and argv[0].endswith(".json"):
        path = argv[0]
    else:
        path = os.path.join(tempfile.mkdtemp(prefix="fastrnn-bench-"), "bench.json")
        run_suite(path, argv)
    with open(path) as f:
        data = json.load(f)
    mi = data.get("machine_info", {})
    print(f"\nmachine: {mi.get('cpu', {}).get('brand_raw', '?')}, "
          f"{mi.get('cpu', {}).get('count', '?')} cores, python {mi.get('python_version', '?')}")
    print(table(data))


if __name__ == "__main__":
    main(sys.argv[1:])
