-- the MLflow backend store lives beside the Optuna studies' database
CREATE DATABASE mlflow OWNER harness;
