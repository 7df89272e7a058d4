#!/usr/bin/env python3
"""Runs pneumo's throughput benchmark and the PyTorch reference side by side and prints one table.

Called by scripts/bench.sh after it has built everything; see docs/benchmark.md.

    python3 bench/compare.py --bench-exe PATH --pneumo PATH [--threads 2] [--runs 3]
                             [--engines native,burn] [--steps 12] [--warmup 3]
                             [--latency-runs 20] [--image FILE] [--out FILE]

Every measurement runs in a fresh process with the same thread count (RAYON_NUM_THREADS for
pneumo, torch.set_num_threads for PyTorch). With --runs N the whole set is repeated N times and
the table shows the median of the per-run figures.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(HERE, "pytorch_reference.py")
ENGINES = ("burn", "native")

# Below these, a run is a smoke test of the tooling, not a measurement (docs/benchmark.md).
MIN_STEPS = 10
MIN_LATENCY_RUNS = 20
# Cores' worth of other work, measured just before a run, above which the run is flagged.
BUSY_LIMIT = 0.1


class CommandFailed(Exception):
    """A benchmark command exited with an error; the message holds its command and stderr."""


def run_json(command, env):
    """Runs a command that prints one JSON object on the last line of its stdout."""
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True)
    except OSError as error:
        raise CommandFailed(f"`{' '.join(command)}` cannot run: {error}")
    if done.returncode != 0:
        raise CommandFailed(f"`{' '.join(command)}` failed ({done.returncode}):\n"
                            f"{done.stderr.strip()}")
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as error:
        raise CommandFailed(f"`{' '.join(command)}` printed no JSON ({error}):\n{done.stdout}")


def time_process(command, env):
    """Wall time of one run of a command, from spawn to exit, its output discarded."""
    started = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except OSError as error:
        raise CommandFailed(f"`{' '.join(command)}` cannot run: {error}")
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise CommandFailed(f"`{' '.join(command)}` failed ({done.returncode}):\n"
                            f"{done.stderr.decode(errors='replace').strip()}")
    return elapsed


def load_average():
    """The 1-, 5- and 15-minute load averages, or None where unavailable."""
    try:
        return os.getloadavg()
    except OSError:
        return None


def cpu_times():
    """(busy, total) CPU time of the whole machine so far, in clock ticks, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + waiting for I/O
    total = sum(fields[:8])  # guest time is already counted in user time
    return total - idle, total


def busy_cores(seconds=2.0):
    """How many cores' worth of work other processes did over `seconds` of waiting, or None
    where /proc/stat is unavailable. Near 0 on a quiet machine."""
    try:
        busy_before, total_before = cpu_times()
        time.sleep(seconds)
        busy_after, total_after = cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    if total_after == total_before:
        return None
    share = (busy_after - busy_before) / (total_after - total_before)
    return share * (os.cpu_count() or 1)


def one_run(args, env, fixtures):
    """One full set of measurements; returns the raw JSON of both sides. An engine whose training
    fails is recorded with its error rather than stopping the run."""
    bench = [args.bench_exe]
    torch = [sys.executable, REFERENCE, "--threads", str(args.threads)]
    steps = ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    result = {"busy_cores_before": busy_cores(), "load_average_before": load_average(),
              "pneumo_train": {}}

    for engine in args.engines:
        try:
            result["pneumo_train"][engine] = run_json(bench + ["train", "--engine", engine] + steps,
                                                      env)
        except CommandFailed as error:
            result["pneumo_train"][engine] = {"error": str(error)}
    result["torch_train"] = run_json(torch + ["train-bench"] + steps, env)
    iterations = ["--iterations", str(args.iterations)]
    # Inference always runs on the native engine: it is what predict, evaluate and serve use.
    result["pneumo_infer"] = run_json(bench + ["infer", "--engine", "native"] + iterations, env)
    result["torch_infer"] = run_json(torch + ["infer-bench"] + iterations, env)
    gemm = ["gemm", "--size", str(args.gemm_size)]
    result["pneumo_gemm"] = run_json(bench + gemm, env)
    result["torch_gemm"] = run_json(torch + gemm, env)

    # Single-image latency, alternating the two so that background load hits both alike. One
    # untimed run each first, so that both start from a warm file cache.
    pneumo_predict = [args.pneumo, "predict", fixtures["image"], "--model", fixtures["bundle"]]
    torch_predict = torch + ["predict", fixtures["image"], "--weights", fixtures["weights"]]
    time_process(pneumo_predict, env)
    time_process(torch_predict, env)
    pneumo_seconds, torch_seconds = [], []
    for _ in range(args.latency_runs):
        pneumo_seconds.append(time_process(pneumo_predict, env))
        torch_seconds.append(time_process(torch_predict, env))
    result["pneumo_predict"] = {"seconds": pneumo_seconds,
                                "median": statistics.median(pneumo_seconds)}
    result["torch_predict"] = {"seconds": torch_seconds,
                               "median": statistics.median(torch_seconds)}
    result["load_average_after"] = load_average()
    return result


def parity_checks(args, env, fixtures):
    """Checks that both sides run the same network and make the same input of an image: the
    network's parameters, FLOPs and last feature map, and the largest pixel difference of the
    preprocessed benchmark image."""
    bench = [args.bench_exe]
    torch = [sys.executable, REFERENCE, "--threads", str(args.threads)]
    pneumo_network = run_json(bench + ["infer", "--iterations", "1"], env)["network"]
    torch_network = run_json(torch + ["infer-bench", "--iterations", "1"], env)["network"]
    pneumo_pixels = run_json(bench + ["preprocess", fixtures["image"]], env)["pixels"]
    torch_pixels = run_json(torch + ["preprocess", fixtures["image"]], env)["pixels"]
    if len(pneumo_pixels) != len(torch_pixels):
        difference = None
    else:
        difference = max(abs(a - b) for a, b in zip(pneumo_pixels, torch_pixels))
    return {
        "pneumo_network": pneumo_network,
        "torch_network": torch_network,
        "same_network": pneumo_network == torch_network,
        "preprocess_max_abs_difference": difference,
    }


def error_reason(message):
    """The line of a failed command's message that says why: the program's `Error:` line if it
    printed one (a backtrace may follow it), else the last line."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    for line in lines:
        if line.lower().startswith("error:"):
            return line
    return lines[-1] if lines else "unknown error"


def median_of(runs, key, field, engine=None):
    """Median over runs of one figure; None if any run lacks it."""
    values = []
    for run in runs:
        record = run[key][engine] if engine else run[key]
        if record.get(field) is None:
            return None
        values.append(record[field])
    return statistics.median(values)


def summarise(runs, engines):
    """Median over runs of each headline figure, for both sides, one set of training rows per
    pneumo engine. Each row: figure, unit, pneumo, pytorch, ratio (pneumo / PyTorch) and which
    way is better."""
    rows = []

    def row(name, unit, pneumo, torch, better, note=None):
        """Adds one row; the ratio is left out when either side lacks the figure."""
        ratio = pneumo / torch if pneumo is not None and torch else None
        rows.append({"figure": name, "unit": unit, "pneumo": pneumo, "pytorch": torch,
                     "ratio": ratio, "better": better, "note": note})

    gib = 1024.0**3
    pneumo_peak = median_of(runs, "pneumo_gemm", "median_gflops_per_second")
    torch_peak = median_of(runs, "torch_gemm", "median_gflops_per_second")
    torch_train = {field: median_of(runs, "torch_train", field)
                   for field in ("images_per_second", "peak_rss_bytes", "start_rss_bytes",
                                 "gflops_per_second")}

    for engine in engines:
        failed = [run["pneumo_train"][engine]["error"] for run in runs
                  if "error" in run["pneumo_train"][engine]]
        if failed:
            reason = error_reason(failed[0])
            row(f"training [{engine}]", "img/s", None, torch_train["images_per_second"],
                "higher", note=f"not run: {reason}")
            continue

        def figure(field):
            """Median over runs of one of this engine's training figures."""
            return median_of(runs, "pneumo_train", field, engine)

        row(f"training [{engine}]", "img/s", figure("images_per_second"),
            torch_train["images_per_second"], "higher")
        row(f"training [{engine}] incl. augmentation", "img/s",
            figure("images_per_second_with_augmentation"), None, "higher",
            note="PyTorch side has no augmentation")
        row(f"training [{engine}] peak RSS", "GiB", figure("peak_rss_bytes") / gib,
            torch_train["peak_rss_bytes"] / gib, "lower")
        pneumo_growth = figure("peak_rss_bytes") - figure("start_rss_bytes")
        torch_growth = torch_train["peak_rss_bytes"] - torch_train["start_rss_bytes"]
        row(f"training [{engine}] peak RSS above start-up", "GiB", pneumo_growth / gib,
            torch_growth / gib, "lower")
        row(f"training [{engine}] achieved", "GFLOP/s", figure("gflops_per_second"),
            torch_train["gflops_per_second"], "higher")
        row(f"training [{engine}] share of own SGEMM peak", "%",
            100 * figure("gflops_per_second") / pneumo_peak,
            100 * torch_train["gflops_per_second"] / torch_peak, "higher",
            note="pneumo: gemm crate; PyTorch: torch.mm")
        machine_peak = max(pneumo_peak, torch_peak)
        row(f"training [{engine}] share of best SGEMM peak", "%",
            100 * figure("gflops_per_second") / machine_peak,
            100 * torch_train["gflops_per_second"] / machine_peak, "higher",
            note="the faster of the two libraries")

    row("batch-32 inference", "img/s", median_of(runs, "pneumo_infer", "images_per_second"),
        median_of(runs, "torch_infer", "images_per_second"), "higher")
    row("predict one JPEG, end to end", "ms", 1e3 * median_of(runs, "pneumo_predict", "median"),
        1e3 * median_of(runs, "torch_predict", "median"), "lower")
    row("SGEMM peak (gemm crate / torch.mm)", "GFLOP/s", pneumo_peak, torch_peak, "higher")
    return rows


def number(value):
    """A table cell: two decimals, or a dash for a missing value."""
    return "-" if value is None else f"{value:.2f}"


def print_table(rows, runs, meta, parity):
    """Prints the comparison table and the checks that qualify it."""
    print(f"pneumo vs PyTorch {meta['torch_version']} on {meta['cpu']} ({meta['cores']} cores), "
          f"{meta['threads']} threads, {len(runs)} run(s), medians")
    header = (f"{'figure':<44} {'unit':>8} {'pneumo':>10} {'PyTorch':>10} {'pneumo/PT':>10}"
              f"  better")
    print(header)
    print("-" * len(header))
    for r in rows:
        line = (f"{r['figure']:<44} {r['unit']:>8} {number(r['pneumo']):>10} "
                f"{number(r['pytorch']):>10} {number(r['ratio']):>10}  {r['better']}")
        if r["note"]:
            line += f"  ({r['note']})"
        print(line)
    print()

    if len(runs) > 1:
        for engine in meta["engines"]:
            values = [run["pneumo_train"][engine].get("images_per_second") for run in runs]
            if None not in values:
                print(f"spread over runs: pneumo [{engine}] training "
                      f"{min(values):.1f}-{max(values):.1f} img/s")
        values = [run["torch_train"]["images_per_second"] for run in runs]
        print(f"spread over runs: PyTorch training {min(values):.1f}-{max(values):.1f} img/s")

    network = parity["pneumo_network"]
    if parity["same_network"]:
        print(f"network check: same on both sides ({network['parameters']} parameters, "
              f"{network['forward_flops'] / 1e6:.1f} MFLOP forward per image, last feature map "
              f"{'x'.join(map(str, network['feature_shape']))})")
    else:
        print(f"WARNING: the networks differ: pneumo {network}, "
              f"PyTorch {parity['torch_network']}")
    difference = parity["preprocess_max_abs_difference"]
    if difference is None:
        print("WARNING: the two sides make model inputs of different sizes from the same image")
    else:
        print(f"preprocessing check: largest difference between the two model inputs of the "
              f"benchmark image {difference:.2g} (standardised units)")

    if not all(run["pneumo_gemm"].get("result_checked") for run in runs):
        print("WARNING: the gemm crate's product failed its spot check; its peak is meaningless")
    busy = [run["busy_cores_before"] for run in runs if run["busy_cores_before"] is not None]
    if busy:
        print(f"other work on the machine just before each run: up to {max(busy):.2f} cores busy")
        if max(busy) > BUSY_LIMIT:
            print("WARNING: the machine was busy; the figures are not representative "
                  "(docs/benchmark.md)")
    settings = meta["settings"]
    if settings["steps"] < MIN_STEPS or settings["latency_runs"] < MIN_LATENCY_RUNS:
        print(f"WARNING: fewer than {MIN_STEPS} timed steps or {MIN_LATENCY_RUNS} latency runs: "
              f"a smoke test, not a measurement")


def command_output(command):
    """First line of a command's output, or None if it cannot run."""
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except OSError:
        return None
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout else None


def cpu_name():
    """The CPU model from /proc/cpuinfo, or the platform's guess."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def engine_list(text):
    """An argparse type: comma-separated engine names, each known, none repeated."""
    engines = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in engines if name not in ENGINES]
    if not engines or unknown:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give one or more of {', '.join(ENGINES)}, separated by commas")
    return list(dict.fromkeys(engines))


def portable(value):
    """A path inside the working directory as a relative path, so saved results name no
    machine's folders; any other value unchanged."""
    if isinstance(value, str) and os.path.isabs(value):
        relative = os.path.relpath(value)
        if not relative.startswith(os.pardir):
            return relative
    return value


def positive(text):
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not at least 1")
    return value


def main():
    """Parses the command line, makes the fixtures, runs everything, prints and saves."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench-exe", required=True, help="the throughput bench executable")
    parser.add_argument("--pneumo", required=True, help="the pneumo release binary")
    parser.add_argument("--threads", type=positive, default=2)
    parser.add_argument("--runs", type=positive, default=3,
                        help="repetitions of the whole set; the table shows medians")
    parser.add_argument("--engines", type=engine_list, default=["native"],
                        help="pneumo training engines to time, comma-separated (burn, native)")
    parser.add_argument("--steps", type=positive, default=12, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps first")
    parser.add_argument("--iterations", type=positive, default=12, help="timed inference batches")
    parser.add_argument("--latency-runs", type=positive, default=20)
    parser.add_argument("--gemm-size", type=positive, default=4096)
    parser.add_argument("--image", help="JPEG to time predict on (default: a generated one)")
    parser.add_argument("--work", default=os.path.join("target", "bench"))
    parser.add_argument("--out", help="where to write the raw JSON")
    args = parser.parse_args()
    if args.image and not os.path.isfile(args.image):
        parser.error(f"--image {args.image}: no such file")

    env = dict(os.environ)
    for variable in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[variable] = str(args.threads)
    env.setdefault("RUST_LOG", "warn")

    try:
        made = run_json([args.bench_exe, "fixtures", args.work], env)
        weights = os.path.join(args.work, "reference-weights.pt")
        run_json([sys.executable, REFERENCE, "save-weights", weights], env)
        fixtures = {"image": args.image or made["image"], "bundle": made["bundle"],
                    "weights": weights}
        parity = parity_checks(args, env, fixtures)
        runs = [one_run(args, env, fixtures) for _ in range(args.runs)]
    except CommandFailed as error:
        sys.exit(f"error: {error}")

    rows = summarise(runs, args.engines)
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "engines": args.engines,
        "torch_version": runs[0]["torch_train"]["versions"]["torch"],
        "versions": runs[0]["torch_train"]["versions"],
        "rustc": command_output(["rustc", "--version"]),
        "pneumo_commit": command_output(["git", "describe", "--always", "--dirty"]),
        "settings": {key: portable(value) for key, value in vars(args).items()},
        "fixtures": {key: portable(value) for key, value in fixtures.items()},
        "image_size": None if args.image else made["image_size"],
    }
    print_table(rows, runs, meta, parity)

    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        partial = args.out + ".partial"
        with open(partial, "w") as out:
            json.dump({"meta": meta, "parity": parity, "summary": rows, "runs": runs}, out,
                      indent=1)
        os.replace(partial, args.out)
        print(f"raw results: {args.out}")


if __name__ == "__main__":
    main()
