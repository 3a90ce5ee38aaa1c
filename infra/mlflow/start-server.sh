#!/bin/sh
# Start the MLflow tracking server with basic authentication. Every secret comes from the environment:
#   MLFLOW_BACKEND_STORE_URI        postgresql+psycopg2://USER:PASSWORD@HOST:5432/DB (read by `mlflow server`)
#   MLFLOW_AUTH_DATABASE_URI        the user/permission store (may be the same PostgreSQL server, other DB)
#   MLFLOW_AUTH_ADMIN_USERNAME      admin created on first start
#   MLFLOW_AUTH_ADMIN_PASSWORD      at least 12 characters; ignored once the admin exists
#   MLFLOW_FLASK_SERVER_SECRET_KEY  CSRF key of the auth app, the same on every replica
#   MLFLOW_ARTIFACTS_DESTINATION    s3://BUCKET/PREFIX, reached with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
#                                   and MLFLOW_S3_ENDPOINT_URL (MinIO or any S3-compatible store)
# Optional: MLFLOW_HOST (default 127.0.0.1; a container publishing a port needs 0.0.0.0), MLFLOW_PORT (5000),
# MLFLOW_WORKERS (2), MLFLOW_ALLOWED_HOSTS (Host headers accepted besides localhost and private addresses).
set -eu

for name in MLFLOW_BACKEND_STORE_URI MLFLOW_AUTH_DATABASE_URI MLFLOW_AUTH_ADMIN_USERNAME \
            MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY MLFLOW_ARTIFACTS_DESTINATION; do
    eval "value=\${$name:-}"
    if [ -z "$value" ]; then
        echo "start-mlflow-server: $name is not set (see infra/.env.example)" >&2
        exit 2
    fi
done

# The auth app reads its store URI from an ini file only; write it where only this user can read it.
umask 077
config_dir=$(mktemp -d)
cat > "$config_dir/basic_auth.ini" <<EOF
[mlflow]
default_permission = READ
database_uri = ${MLFLOW_AUTH_DATABASE_URI}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 60
EOF
export MLFLOW_AUTH_CONFIG_PATH="$config_dir/basic_auth.ini"

set -- mlflow server \
    --app-name basic-auth \
    --serve-artifacts \
    --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
    --host "${MLFLOW_HOST:-127.0.0.1}" \
    --port "${MLFLOW_PORT:-5000}" \
    --workers "${MLFLOW_WORKERS:-2}"
if [ -n "${MLFLOW_ALLOWED_HOSTS:-}" ]; then
    set -- "$@" --allowed-hosts "$MLFLOW_ALLOWED_HOSTS"
fi
exec "$@"
