"""Built-in trainables of the default trial image; each runs as `python -m rung_trainables.<name>`.

benchmarks      pure benchmark functions (also used in-process by bench/)
counting_ones   BOHB's counting-ones problem; resumes by continuing its draws
hartmann6       multi-fidelity Hartmann-6 (or -3 when only x0..x2 are given)
branin          multi-fidelity Branin
mlp_digits      a numpy MLP really trained on scikit-learn's digits; resumes bit-for-bit
cnn_digits      a torch CNN on the digits, data-parallel (DDP) over its pod's GPUs; reports throughput
count_steps     a deterministic trainable for tests that logs every step it trains
shifting_lr     SGD on least squares whose best learning rate falls as it trains (PBT's example)
"""
