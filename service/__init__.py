"""Pipeline Service: REST API over Apache Airflow 3. Imports dag_factory.spec, never airflow."""
