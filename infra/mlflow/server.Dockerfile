# MLflow tracking server with the PostgreSQL driver, the S3 client and the basic-auth app.
#   docker build -f infra/mlflow/server.Dockerfile -t chemoscreen-mlflow:3.17.2 infra/mlflow
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

ARG MLFLOW_VERSION=3.17.2
RUN pip install --no-cache-dir "mlflow[auth]==${MLFLOW_VERSION}" psycopg2-binary boto3 \
    && useradd --create-home --uid 1000 mlflow

COPY --chmod=0755 start-server.sh /usr/local/bin/start-mlflow-server
USER mlflow
WORKDIR /home/mlflow
EXPOSE 5000
ENTRYPOINT ["/usr/local/bin/start-mlflow-server"]
