# Written by pipeline-service. An empty Airflow DAG that is always in this bundle, so the service can ask
# Airflow (PUT /api/v2/parseDagFile) to rescan the folder the moment it writes a new pipeline file.
from airflow.sdk import DAG

with DAG(dag_id="pipeline_service_sentinel", schedule=None, tags=["pipeline-service"], is_paused_upon_creation=True):
    pass
