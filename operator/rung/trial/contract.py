"""The contract between a runtime (local process or Kubernetes pod) and trial code.

Inputs arrive as environment variables; live metrics leave as stdout lines that start
with REPORT_PREFIX followed by JSON; the final result of a segment is written as JSON to
the file named by RESULT_FILE (in a pod: the container's termination message path), so
trial code needs no access to the API server or the results folder.

Checkpoint housekeeping runs in the trial, where the store and its credentials are:
before its first save the SDK aborts uploads a killed predecessor left under its prefix;
after each save it prunes to the latest checkpoint plus RUNG_KEEP_BEST best by
RUNG_OBJECTIVE, ranked from the metrics each manifest records. Unset RUNG_KEEP_BEST (a
trainable run by hand) keeps every checkpoint.
"""

ENV_STUDY = "RUNG_STUDY"              # study name
ENV_TRIAL = "RUNG_TRIAL"              # trial name, <study>-<index>
ENV_SEGMENT = "RUNG_SEGMENT"          # segment number of this trial, 0, 1, ...
ENV_PARAMS = "RUNG_PARAMS"            # JSON object of the trial's parameters
ENV_BUDGET = "RUNG_BUDGET"            # budget this segment must reach (float)
ENV_CHECKPOINT_URI = "RUNG_CHECKPOINT_URI"  # this trial's checkpoint root, file:// or s3://
ENV_RESULT_FILE = "RUNG_RESULT_FILE"  # where the final result JSON goes
ENV_CHECKPOINT_EVERY_STEPS = "RUNG_CHECKPOINT_EVERY_STEPS"      # periodic checkpoints (0: off)
ENV_CHECKPOINT_EVERY_SECONDS = "RUNG_CHECKPOINT_EVERY_SECONDS"  # periodic checkpoints (0: off)
ENV_KEEP_BEST = "RUNG_KEEP_BEST"      # retention: latest + this many best (int; unset/empty: keep all)
ENV_OBJECTIVE = "RUNG_OBJECTIVE"      # the metric that ranks checkpoints, e.g. val_loss
ENV_OBJECTIVE_GOAL = "RUNG_OBJECTIVE_GOAL"  # minimize (default) | maximize
ENV_GPUS = "RUNG_GPUS"                # GPUs this segment's pod got (int; unset/empty: 0, CPU)
# PBT: a trial that starts from another trial's weights, before it has checkpoints of its own
ENV_PARENT_CHECKPOINT_URI = "RUNG_PARENT_CHECKPOINT_URI"   # the other trial's checkpoint root
ENV_PARENT_PARAMS = "RUNG_PARENT_PARAMS"  # its parameters (JSON): its checkpoints are bound to them
ENV_PARENT_STEP = "RUNG_PARENT_STEP"      # its latest checkpoint at a step <= this one is loaded

REPORT_PREFIX = "@rung "  # stdout line: '@rung {"step": 3, "metrics": {"val_loss": 0.12}}'

# Reserved metric: samples (or steps) per second the trial trained at. A report that carries
# it also carries "gpus" (RUNG_GPUS), the pair a measured efficiency fit needs per segment:
# '@rung {"step": 3, "metrics": {"val_loss": 0.12, "throughput": 812.5}, "gpus": 2}'
THROUGHPUT_METRIC = "throughput"

DEFAULT_RESULT_FILE = "/dev/termination-log"
