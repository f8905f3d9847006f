"""Render 200 pipeline definitions of three chained steps (source -> transformation -> sink) into Airflow
DAGs in one process, the way the dag-processor does (through the generated files' entry point,
`load_pipeline_dag`), and print the median milliseconds per DAG.

    .venv/bin/python bench/render.py [--count 200] [--profile] [--baseline]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import time

from dag_factory import load_pipeline_dag


def config(i: int) -> str:
    definition = {
        "sources": {"orders": {"type": "postgres", "connection": "src", "table": f"public.orders_{abs(i)}"}},
        "transformations": [
            {"name": "clean", "type": "sql_transform", "inputs": ["orders"], "sql": "SELECT * FROM orders"}
        ],
        "sinks": {"out": {"type": "postgres", "connection": "wh", "table": f"mart.orders_{abs(i)}", "input": "clean"}},
    }
    return json.dumps(
        {
            "dag_id": f"bench.pipeline_{i + 1}",
            "definition": definition,
            "connections": {"src": "bench.src", "wh": "bench.wh"},
            "description": f"bench pipeline {i}",
            "tags": ["bench"],
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--baseline", action="store_true", help="also time hand-written Airflow code")
    args = parser.parse_args()
    configs = [config(i) for i in range(args.count)]
    load_pipeline_dag(config(-1))  # warm-up: first-use imports and caches are not per-DAG costs
    profiler = cProfile.Profile() if args.profile else None
    wall, cpu = [], []
    for text in configs:
        if profiler:
            profiler.enable()
        start, start_cpu = time.perf_counter(), time.process_time()
        load_pipeline_dag(text)
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
        if profiler:
            profiler.disable()
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
    report("dag_factory", wall, cpu)
    if args.baseline:
        baseline(args.count)


def report(label: str, wall: list[float], cpu: list[float]) -> None:
    # CPU time as well: on a shared machine the wall clock also measures the neighbours.
    print(
        f"{label}: {len(wall)} DAGs, median {statistics.median(wall):.3f} ms/DAG wall, "
        f"{statistics.median(cpu):.3f} ms/DAG CPU"
    )


def baseline(count: int) -> None:
    """The same three chained steps as hand-written Airflow code (EmptyOperators), for comparison."""
    from datetime import UTC, datetime

    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    def one(i: int) -> None:
        with DAG(f"plain_{i}", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC), tags=["bench"]):
            EmptyOperator(task_id="extract") >> EmptyOperator(task_id="transform") >> EmptyOperator(task_id="load")

    one(-1)
    wall, cpu = [], []
    for i in range(count):
        start, start_cpu = time.perf_counter(), time.process_time()
        one(i)
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    report("hand-written Airflow", wall, cpu)


if __name__ == "__main__":
    main()
