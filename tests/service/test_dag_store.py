"""Where the DAG files are published: a folder, or an S3 prefix read by Airflow's S3 DAG bundle (on moto's
S3 server here); the publisher picks the S3 store when PIPELINE_DAG_BUNDLE_S3_BUCKET is set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from service.config import Settings
from service.pipelines import dagfile
from service.pipelines.publisher import dag_store
from tests.connections.servers import MotoServer


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer.start()
    yield server
    server.stop()


@pytest.fixture
def bucket(moto: MotoServer) -> str:
    client = boto3.session.Session().client(
        "s3", endpoint_url=moto.url, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    name = f"dags-{id(object())}"
    client.create_bucket(Bucket=name)
    return name


def s3_settings(tmp_path: Path, moto: MotoServer, bucket: str) -> Settings:
    return Settings(
        data_dir=tmp_path,
        dag_bundle_s3_bucket=bucket,
        dag_bundle_s3_prefix="team/dags/",
        dag_bundle_s3_endpoint_url=moto.url,
        dag_bundle_s3_access_key_id="k",
        dag_bundle_s3_secret_access_key="s",
    )


def test_the_s3_store_writes_reads_and_deletes_objects_under_its_prefix(
    tmp_path: Path, moto: MotoServer, bucket: str
) -> None:
    store = dag_store(s3_settings(tmp_path, moto, bucket))
    assert isinstance(store, dagfile.S3Store)
    assert store.read("pipeline_a.py") is None
    store.write("pipeline_a.py", "dag = 1\n")
    store.write("pipeline_a.py", "dag = 2\n")  # replaced whole
    assert store.read("pipeline_a.py") == "dag = 2\n"
    dagfile.ensure_sentinel(store)
    client = boto3.session.Session().client(
        "s3", endpoint_url=moto.url, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["team/dags/_pipeline_service_sentinel.py", "team/dags/pipeline_a.py"]
    store.delete("pipeline_a.py")
    store.delete("pipeline_a.py")  # deleting a missing file is no error, as for a folder
    assert store.read("pipeline_a.py") is None


def test_without_a_bucket_the_files_go_to_the_dags_folder(tmp_path: Path) -> None:
    store = dag_store(Settings(data_dir=tmp_path, dags_dir=tmp_path / "dags"))
    assert isinstance(store, dagfile.FolderStore)
    store.write("pipeline_b.py", "x = 1\n")
    assert (tmp_path / "dags" / "pipeline_b.py").read_text() == "x = 1\n" == store.read("pipeline_b.py")
    store.delete("pipeline_b.py")
    assert store.read("pipeline_b.py") is None
