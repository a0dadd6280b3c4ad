"""A job worker written the way AWS's published custom-action samples are:
poll for a job of its action type, acknowledge it with the nonce, read the
job's details, download the input artifact with an S3 client built from the
job's artifactCredentials, upload an output zip, and put the result. Its
first job asks to continue (continuationToken); the second, which carries
the token, finishes with output variables.

Between the steps it tries what an attacker would with the same
credentials, and reports every error code it met, last, as one JSON line.

usage: worker_sample.py CATEGORY PROVIDER VERSION PROJECT
"""
import io
import json
import os
import sys
import tempfile
import time
import zipfile

import boto3
from botocore.config import Config

from common import code_of, record_headers

category, provider, version, project = sys.argv[1:5]
ACTION_TYPE = {"category": category, "owner": "Custom", "provider": provider, "version": version}
codepipeline = boto3.client("codepipeline")
work = tempfile.mkdtemp()
seen = {}
sent_headers = []


def poll():
    deadline = time.time() + 60
    while time.time() < deadline:
        jobs = codepipeline.poll_for_jobs(
            actionTypeId=ACTION_TYPE, maxBatchSize=1, queryParam={"ProjectName": project}
        )["jobs"]
        if jobs:
            return jobs[0]
        time.sleep(0.3)
    raise SystemExit("no job to poll within 60 s")


def s3_for(job, token=None, endpoint=None):
    credentials = job["data"]["artifactCredentials"]
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=credentials["accessKeyId"],
        aws_secret_access_key=credentials["secretAccessKey"],
        aws_session_token=token or credentials["sessionToken"],
        config=Config(s3={"addressing_style": "path"}),
    )


def s3_as_over_tls(job):
    """An S3 client over HTTPS (the endpoint is https://), its headers
    recorded in sent_headers (common.record_headers)."""
    client = s3_for(job, endpoint=os.environ["AWS_ENDPOINT_URL"])
    return record_headers(client, sent_headers)


def location(artifact):
    s3 = artifact["location"]["s3Location"]
    return s3["bucketName"], s3["objectKey"]


def output_zip(greeting):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("greeting.txt", greeting)
        script = zipfile.ZipInfo("bin/run.sh")
        script.external_attr = 0o755 << 16
        z.writestr(script, "#!/bin/sh\necho packaged\n")
    return buffer.getvalue()


# The first job: acknowledge it (a wrong nonce first), download, upload, continue.
job = poll()
seen["wrongNonce"] = code_of(lambda: codepipeline.acknowledge_job(jobId=job["id"], nonce="0" * 32))
seen["ack"] = codepipeline.acknowledge_job(jobId=job["id"], nonce=job["nonce"])["status"]
seen["secret"] = job["data"]["actionConfiguration"]["configuration"].get("Token")
details = codepipeline.get_job_details(jobId=job["id"])["jobDetails"]
assert details["data"]["pipelineContext"]["stage"]["name"] == "Build", details
s3 = s3_for(job)
in_bucket, in_key = location(job["data"]["inputArtifacts"][0])
out_bucket, out_key = location(job["data"]["outputArtifacts"][0])
s3.download_file(in_bucket, in_key, os.path.join(work, "input.zip"))
with zipfile.ZipFile(os.path.join(work, "input.zip")) as z:
    hello = z.read("hello.txt").decode()
with open(os.path.join(work, "output.zip"), "wb") as f:
    f.write(output_zip("first draft\n"))
s3.upload_file(os.path.join(work, "output.zip"), out_bucket, out_key)

# The attacker's tries with this job's credentials.
seen["otherObject"] = code_of(lambda: s3.get_object(Bucket=in_bucket, Key="someone/else/in/src.zip"))
seen["traversal"] = code_of(lambda: s3.get_object(Bucket=in_bucket, Key=out_key + "/../../in/src.zip"))
seen["writeInput"] = code_of(lambda: s3.put_object(Bucket=in_bucket, Key=in_key, Body=output_zip("x")))
seen["otherBucket"] = code_of(lambda: s3.get_object(Bucket="another-bucket", Key=in_key))
seen["forgedToken"] = code_of(lambda: s3_for(job, token="sluice-job-forged").get_object(Bucket=in_bucket, Key=in_key))
seen["notZip"] = code_of(lambda: s3.put_object(Bucket=out_bucket, Key=out_key, Body=b"this is not a zip"))
slip = io.BytesIO()
with zipfile.ZipFile(slip, "w") as z:
    z.writestr("../../evil.txt", "escaped")
seen["zipSlip"] = code_of(lambda: s3.put_object(Bucket=out_bucket, Key=out_key, Body=slip.getvalue()))

codepipeline.put_job_success_result(
    jobId=job["id"],
    continuationToken="part-2",
    executionDetails={"summary": "uploaded a first draft", "percentComplete": 50},
)
seen["successAgain"] = code_of(lambda: codepipeline.put_job_success_result(jobId=job["id"]))
seen["afterEnd"] = code_of(lambda: s3.get_object(Bucket=in_bucket, Key=in_key))

# The second job carries the token: read the draft back, replace it, finish.
second = poll()
codepipeline.acknowledge_job(jobId=second["id"], nonce=second["nonce"])
s3 = s3_for(second)
token = second["data"].get("continuationToken")
head = s3.head_object(Bucket=out_bucket, Key=out_key)
draft = zipfile.ZipFile(io.BytesIO(s3.get_object(Bucket=out_bucket, Key=out_key)["Body"].read()))
s3.download_file(in_bucket, in_key, os.path.join(work, "input-again.zip"))
# The final upload as boto3 sends it over TLS: aws-chunked, CRC32 trailer.
s3_as_over_tls(second).put_object(Bucket=out_bucket, Key=out_key, Body=output_zip("hello from the worker: " + hello))
chunked = sent_headers[-1]
seen["chunkedUpload"] = [chunked.get("content-encoding"), chunked.get("x-amz-content-sha256"), chunked.get("x-amz-trailer")]
codepipeline.put_job_success_result(
    jobId=second["id"],
    outputVariables={"Version": "1.2.3", "Project": project},
    executionDetails={"summary": "packaged", "externalExecutionId": "run-42"},
)
seen["unknownJob"] = code_of(
    lambda: codepipeline.put_job_success_result(jobId="00000000-0000-4000-8000-000000000000")
)
print(
    json.dumps(
        {
            "jobs": [job["id"], second["id"]],
            "token": token,
            "draft": draft.read("greeting.txt").decode(),
            "headLength": head["ContentLength"],
            "hello": hello,
            "secret": seen.pop("secret"),
            "codes": seen,
        }
    )
)
