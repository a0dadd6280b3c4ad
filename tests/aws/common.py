"""Helpers the AWS-API test scripts share: a boto3 client configured by
the environment the test harness sets (AWS_ENDPOINT_URL, the key, the
region), waiting, and printing the result the Rust test reads."""
import http.client
import json
import os
import ssl
import sys
import time
import urllib.parse

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError


def client(service="codepipeline"):
    # No retries: a failed call fails the test at once.
    return boto3.client(service, config=Config(retries={"max_attempts": 1, "mode": "standard"}))


def wait_for(what, probe, timeout=60.0):
    """Calls probe until it returns something truthy; fails after timeout."""
    deadline = time.time() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.time() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.3)


def execution_end(cp, pipeline, execution_id, timeout=60.0):
    """The execution once it ended, read through get_pipeline_execution."""

    def ended():
        e = cp.get_pipeline_execution(pipelineName=pipeline, pipelineExecutionId=execution_id)["pipelineExecution"]
        return e if e["status"] not in ("InProgress", "Stopping") else None

    return wait_for(f"execution {execution_id} to end", ended, timeout)


def action_state(state, stage, action):
    for s in state["stageStates"]:
        if s["stageName"] == stage:
            for a in s["actionStates"]:
                if a["actionName"] == action:
                    return a
    sys.exit(f"no action {stage}/{action} in {state}")


def error_code(call):
    """The modeled error code a call raises (None if it succeeds)."""
    try:
        call()
    except Exception as e:  # botocore's ClientError and the modeled exceptions
        response = getattr(e, "response", None)
        if response is None:
            raise
        return {"code": response["Error"]["Code"], "class": type(e).__name__, "status": response["ResponseMetadata"]["HTTPStatusCode"]}
    return None


def code_of(call):
    """The error code a call raises, "no error" if it succeeds."""
    try:
        call()
    except ClientError as e:
        return e.response["Error"]["Code"]
    return "no error"


def record_headers(client, sent):
    """Records the headers of each request an S3 client sends in `sent`
    (the request itself goes out unchanged, over HTTPS): botocore sends
    PutObject and UploadPart as unsigned aws-chunked bodies with a
    trailing CRC32 only over TLS, and the tests check that it did."""

    def record(request, **kwargs):
        headers = dict(request.headers.items())
        sent.append({k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in headers.items()})
        return None  # botocore sends the request itself

    client.meta.events.register("before-send.s3", record)
    return client


def ssl_context():
    """TLS verified against AWS_CA_BUNDLE (the controller's CA), as the SDK
    verifies it."""
    return ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE"))


def connection(endpoint_url, timeout=10):
    """An http.client connection to the endpoint: HTTPS verified against
    AWS_CA_BUNDLE, or plain HTTP for an http:// endpoint."""
    url = urllib.parse.urlsplit(endpoint_url)
    if url.scheme == "https":
        return http.client.HTTPSConnection(url.hostname, url.port, timeout=timeout, context=ssl_context())
    return http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)


def done(result):
    print(json.dumps(result, default=str))
