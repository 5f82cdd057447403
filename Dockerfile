# syntax=docker/dockerfile:1
# One image for every Alpha Panda function and the market feed. The chart chooses what runs:
#   functions-framework --source functions/<name>/main.py --target handle --signature-type cloudevent --port 8080
#   alphapanda feed
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what `pip install .` needs, so code outside the package does not bust the wheel cache.
# README.md* (a glob): pyproject names it as the long description, but a build without it works.
COPY pyproject.toml README.md* ./
COPY shared/ shared/
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# A fixed non-root uid: the chart's securityContext runs as 10001 with runAsNonRoot.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /app alphapanda
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels pip install /wheels/*.whl
WORKDIR /app
COPY functions/ functions/
USER 10001
EXPOSE 8080
# functions-framework reads these when no flags are given; the chart passes flags explicitly.
ENV FUNCTION_TARGET=handle FUNCTION_SIGNATURE_TYPE=cloudevent PORT=8080
CMD ["alphapanda", "--help"]
