"""A job worker moving artifacts above boto3's 8 MiB multipart threshold,
with boto3's own transfer manager and its default settings: download_file
of a >8 MiB input (parallel ranged GETs) and upload_file of a >8 MiB
output (CreateMultipartUpload, UploadPart, CompleteMultipartUpload).

Two actions of the type run side by side (ProjectName `big` and `side`):
`big` continues once, and its first job plays the attacker with a
multipart upload of its own: another job's credentials on it, forged part
lists, a part after the job ended. Every error code met is reported, last,
as one JSON line.

usage: worker_multipart.py CATEGORY PROVIDER VERSION
"""
import hashlib
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

category, provider, version = sys.argv[1:4]
ACTION_TYPE = {"category": category, "owner": "Custom", "provider": provider, "version": version}
MiB = 1 << 20
codepipeline = boto3.client("codepipeline")
work = tempfile.mkdtemp()
codes = {}
requests = []
operations = []


def poll(project):
    deadline = time.time() + 60
    while time.time() < deadline:
        jobs = codepipeline.poll_for_jobs(
            actionTypeId=ACTION_TYPE, maxBatchSize=1, queryParam={"ProjectName": project}
        )["jobs"]
        if jobs:
            job = jobs[0]
            codepipeline.acknowledge_job(jobId=job["id"], nonce=job["nonce"])
            return job
        time.sleep(0.3)
    raise SystemExit(f"no {project} job to poll within 60 s")


def record(request, **kwargs):
    requests.append((request.method, request.headers.get("Range") is not None))


def record_operation(model, **kwargs):
    operations.append(model.name)


def s3_for(job, endpoint=None):
    credentials = job["data"]["artifactCredentials"]
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=credentials["accessKeyId"],
        aws_secret_access_key=credentials["secretAccessKey"],
        aws_session_token=credentials["sessionToken"],
        config=Config(s3={"addressing_style": "path"}),
    )
    client.meta.events.register("before-send.s3", record)
    client.meta.events.register("before-call.s3", record_operation)
    return client


def s3_as_over_tls(job):
    """An S3 client over HTTPS (the endpoint is https://), its headers
    recorded in sent (common.record_headers)."""
    client = s3_for(job, endpoint=os.environ["AWS_ENDPOINT_URL"])
    return record_headers(client, sent)


sent = []


def location(artifact):
    s3 = artifact["location"]["s3Location"]
    return s3["bucketName"], s3["objectKey"]


big = poll("big")
side = poll("side")
s3, s3_side = s3_for(big), s3_for(side)
bucket, in_key = location(big["data"]["inputArtifacts"][0])
_, out_key = location(big["data"]["outputArtifacts"][0])
_, side_key = location(side["data"]["outputArtifacts"][0])

# The >8 MiB input: ranged GETs in parallel, stitched; equal to one whole GET.
downloaded = os.path.join(work, "input.zip")
s3.download_file(bucket, in_key, downloaded)
ranged = sum(1 for method, has_range in requests if method == "GET" and has_range)
with open(downloaded, "rb") as f:
    stitched = f.read()
whole = s3.get_object(Bucket=bucket, Key=in_key)["Body"].read()
with zipfile.ZipFile(downloaded) as z:
    payload = z.read("big.bin")

# The attacker's tries on an upload of the first job.
upload = s3.create_multipart_upload(Bucket=bucket, Key=out_key)["UploadId"]
part1 = s3.upload_part(Bucket=bucket, Key=out_key, UploadId=upload, PartNumber=1, Body=payload[: 5 * MiB])["ETag"]
part2 = s3.upload_part(Bucket=bucket, Key=out_key, UploadId=upload, PartNumber=2, Body=b"small")["ETag"]
part3 = s3.upload_part(Bucket=bucket, Key=out_key, UploadId=upload, PartNumber=3, Body=b"last")["ETag"]
other = dict(Bucket=bucket, UploadId=upload, PartNumber=4, Body=b"x")
codes["otherJobPartOnItsObject"] = code_of(lambda: s3_side.upload_part(Key=out_key, **other))
codes["otherJobPartOnOwnObject"] = code_of(lambda: s3_side.upload_part(Key=side_key, **other))
codes["otherJobComplete"] = code_of(
    lambda: s3_side.complete_multipart_upload(
        Bucket=bucket, Key=side_key, UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part1}]},
    )
)
codes["otherJobAbort"] = code_of(lambda: s3_side.abort_multipart_upload(Bucket=bucket, Key=side_key, UploadId=upload))


def complete(parts, upload_id=upload):
    return code_of(
        lambda: s3.complete_multipart_upload(
            Bucket=bucket, Key=out_key, UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]},
        )
    )


codes["forgedETag"] = complete([(1, '"' + "0" * 32 + '"')])
codes["notUploaded"] = complete([(1, part1), (9, part3)])
codes["wrongOrder"] = complete([(3, part3), (1, part1)])
codes["tooSmall"] = complete([(1, part1), (2, part2), (3, part3)])
codes["unknownUpload"] = complete([(1, part1)], upload_id="f" * 32)
codes["listParts"] = code_of(lambda: s3.list_parts(Bucket=bucket, Key=out_key, UploadId=upload))
aborted = s3.create_multipart_upload(Bucket=bucket, Key=out_key)["UploadId"]
s3.abort_multipart_upload(Bucket=bucket, Key=out_key, UploadId=aborted)
codes["partAfterAbort"] = code_of(
    lambda: s3.upload_part(Bucket=bucket, Key=out_key, UploadId=aborted, PartNumber=1, Body=b"x")
)
codes["writeInput"] = code_of(lambda: s3.create_multipart_upload(Bucket=bucket, Key=in_key))

# The first job ends (continues): its upload is dead.
codepipeline.put_job_success_result(jobId=big["id"], continuationToken="upload")
codes["partAfterEnd"] = code_of(
    lambda: s3.upload_part(Bucket=bucket, Key=out_key, UploadId=upload, PartNumber=4, Body=b"late")
)
codes["completeAfterEnd"] = complete([(1, part1), (3, part3)])

# The side action's small output, then its result.
side_zip = io.BytesIO()
with zipfile.ZipFile(side_zip, "w") as z:
    z.writestr("side.txt", "side")
s3_side.put_object(Bucket=bucket, Key=side_key, Body=side_zip.getvalue())
codepipeline.put_job_success_result(jobId=side["id"])

# The continuation uploads the >8 MiB output with upload_file's defaults,
# its parts as boto3 sends them over TLS.
second = poll("big")
s3 = s3_as_over_tls(second)
output = os.path.join(work, "output.zip")
with zipfile.ZipFile(output, "w", zipfile.ZIP_STORED) as z:
    z.writestr("big.bin", payload)
    z.writestr("from-worker.txt", "multipart\n")
del operations[:]
s3.upload_file(output, bucket, out_key)
multipart = {name: operations.count(name) for name in operations}
part_bodies = sorted(
    {(h.get("content-encoding"), h.get("x-amz-content-sha256"), h.get("x-amz-trailer")) for h in sent}, key=str
)
head = s3.head_object(Bucket=bucket, Key=out_key)
codepipeline.put_job_success_result(jobId=second["id"], executionDetails={"summary": "uploaded in parts"})
print(
    json.dumps(
        {
            "inputZipBytes": len(stitched),
            "rangedGets": ranged,
            "stitchedIsWhole": stitched == whole,
            "inputSha256": hashlib.sha256(payload).hexdigest(),
            "outputZipBytes": os.path.getsize(output),
            "uploadRequests": multipart,
            "partBodies": part_bodies,
            "headLength": head["ContentLength"],
            "uploadId": upload,
            "codes": codes,
        }
    )
)
