# The operator image: `rung operator` with in-cluster credentials, as a non-root user.
# Build from the repository root: docker build -t rung-operator:0.1.0 .
# The first steps are the same as trial_image/Dockerfile's, so the two images share them.
FROM python:3.11-slim

# Nothing is written outside /tmp at run time (the pod's root filesystem is read-only).
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 HOME=/tmp MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /src
# The dependencies first, from pyproject.toml alone: a code change rebuilds only what follows.
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY operator ./operator
COPY trial_image/rung_trainables ./trial_image/rung_trainables
RUN pip install --no-deps . && rm -rf /src

WORKDIR /tmp
# A uid without a passwd entry: USER names it for getpass.getuser() (kopf's identity).
ENV USER=rung
USER 65532:65532
ENTRYPOINT ["rung", "operator"]
