"""The Python side of scripts/bench-bindings: sets N answers through the generated bindings.

Usage: python3 bench_set_answer.py DIR [N]   (the generated `tejido` module must be importable)
"""

import sys
import time

import tejido


def main():
    directory = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    store = tejido.TejidoStore.open(f"{directory}/python-bench.db")
    sub = store.start_submission("bench", "1")
    start = time.perf_counter()
    for i in range(n):
        store.set_answer(sub, f"q{i % 100}", tejido.AnswerValue.INTEGER(i))
    secs = time.perf_counter() - start
    print(f"ffi.python.set_answer_per_s = {n / secs:.0f} answers/s")


if __name__ == "__main__":
    main()
