-- Runs once, when the PostgreSQL volume is first initialised: a separate database for the users and
-- permissions of MLflow's basic-auth app, beside the tracking store (POSTGRES_DB).
CREATE DATABASE mlflow_auth;
