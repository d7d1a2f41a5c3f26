# The operator image: `rung operator` with in-cluster credentials.
# Build from the repository root: docker build -t rung-operator:0.1.0 .
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY trial_image/rung_trainables/ trial_image/rung_trainables/
RUN pip install --no-cache-dir . && rm -rf /src
USER 65532:65532
ENTRYPOINT ["rung", "operator"]
