"""`make bench`: kdprune's performance figures, each a ratio of two measurements taken in one run.

    make bench                                  # everything, writes BENCHMARKS.md + results.json
    make bench ARGS="--only latency,kd"         # some figures (the others keep their old numbers)
    .venv/bin/python -m benchmarks --quick      # tiny sizes (digits, a few batches): a smoke run

Figures, one module each: (a) `training`: the engine's training throughput vs a bare PyTorch loop;
(b) `kd`: one KD epoch vs one cross-entropy epoch, with cached and with live teacher logits;
(c) `sweep`: a 15-run orders sweep: teacher trainings and overhead share; (d) `latency`: measured
CPU speed-up of compressed models vs their MACs speed-up, eager PyTorch and ONNX Runtime (the
compressed models in `compression`, its Markdown in `latency_report`); (e) `cuda`: GPU-resident,
mixed-precision, channels_last teacher training vs a DataLoader-fed fp32 one; (f) `quantization`:
INT8 (`quantize=ptq`) vs FP32 ONNX Runtime latency of the models' 2x cut, with where the time goes
(its Markdown in `quantization_report`); (g) `ddp`: a training epoch on two processes
(DistributedDataParallel, gloo) vs one process; (h) `latency_target`: the measured speed-up of
the uniform MACs cut and of the latency cut (`prune_method.unit=latency`) against the one asked
for (its Markdown in `latency_target_report`). `gpu_check` (`make gpu-check`) is no figure: it
checks the CUDA path on a lent GPU and writes what it found to its own file.

The two sides of each ratio are measured interleaved (A, B, A, B, ...) `reps` times and compared by
their medians (`measure`), with torch's CPU thread count set explicitly, and the load average
recorded. The targets are in `targets`, the sizes in `sizes`; `figures` runs and merges them,
`report` writes BENCHMARKS.md, `cli` is the command line.

This package is not part of the installed kdprune: run it from the repository root.
"""
